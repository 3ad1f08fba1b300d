"""Process bodies for the 2-process gloo tests (imported by spawned children).

Every body forces the CPU: ``CUDA_VISIBLE_DEVICES`` is emptied before anything touches
CUDA and the device is passed as ``cpu`` explicitly, so on a GPU box these tests still run
gloo on CPU (never NCCL, never ``cuda:<rank>`` on a one-GPU machine).
"""

import json
import os

import torch


def _setup(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, even on a GPU box
    torch.set_num_threads(1)


def run_job(rank: int, world: int, port: int, cfg_kwargs: dict, out: str) -> None:
    from recsys.distributed.dlrm_job import JobConfig, run
    from recsys.distributed.env import shutdown

    _setup(rank, world, port)
    try:
        res = run(JobConfig(**{**cfg_kwargs, "device": "cpu"}))
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump(res, f)
    finally:
        shutdown()


def check_ownership(rank: int, world: int, port: int, out: str) -> None:
    """One step: embeddings move in backward (fused), dense params only in optimizer.step()."""
    from recsys.data.criteo import N_DENSE, CriteoEncoder, generate_rows, parse_line, to_kjt
    from recsys.distributed.env import init_from_env, shutdown
    from recsys.distributed.sharding import make_optimizer, shard_model
    from recsys.models.dlrm import build_dlrm

    _setup(rank, world, port)
    try:
        torch.manual_seed(0)
        env = init_from_env(backend="gloo", device="cpu")
        enc = CriteoEncoder(hash_size=50)
        data = enc.transform(parse_line(x) for x in generate_rows(32, seed=rank))
        model = shard_model(build_dlrm(enc.cardinalities(), N_DENSE, 8), env.device, ["table_wise"], 32)
        opt = make_optimizer(model, torch.optim.SGD, lr=0.1)
        dense_names = set(dict(opt.optimizers)["dense"].params.keys())

        def snapshot():
            out = {}
            for k, v in model.state_dict().items():
                if hasattr(v, "local_shards"):
                    out[k] = torch.cat([s.tensor.flatten() for s in v.local_shards()]) if v.local_shards() else torch.zeros(0)
                else:
                    out[k] = v.detach().clone()
            return {k: t.clone() for k, t in out.items()}

        s0 = snapshot()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(data["dense"], to_kjt(data["sparse"])), data["labels"])
        opt.zero_grad()
        loss.backward()
        s1 = snapshot()
        opt.step()
        s2 = snapshot()
        emb = [k for k in s0 if "embedding_bags" in k and s0[k].numel()]
        dense = [k for k in s0 if "embedding_bags" not in k]
        res = {
            "emb_moved_in_backward": all(not torch.equal(s0[k], s1[k]) for k in emb),
            "emb_still_in_step": all(torch.equal(s1[k], s2[k]) for k in emb),
            "dense_still_in_backward": all(torch.equal(s0[k], s1[k]) for k in dense),
            "dense_moved_in_step": sum(not torch.equal(s1[k], s2[k]) for k in dense),
            "n_dense": len(dense),
            "n_emb": len(emb),
            "dense_opt_has_embedding": any("embedding_bags" in n for n in dense_names),
            "n_dense_opt_params": len(dense_names),
        }
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump(res, f)
    finally:
        shutdown()


def digest_without_shard(rank: int, world: int, port: int, out: str) -> None:
    """One table, table-wise on 2 ranks: one rank holds no shard and still joins the digest's all-reduce."""
    from recsys.distributed.dlrm_job import param_digest
    from recsys.distributed.env import init_from_env, shutdown
    from recsys.distributed.sharding import shard_model
    from recsys.models.dlrm import build_dlrm

    _setup(rank, world, port)
    try:
        torch.manual_seed(0)
        env = init_from_env(backend="gloo", device="cpu")
        model = shard_model(build_dlrm({"a": 40}, num_dense_features=3, embedding_dim=8), env.device, ["table_wise"], 16)
        table = next(v for k, v in model.state_dict().items() if hasattr(v, "local_shards"))
        res = {"n_local_shards": len(table.local_shards()), "digest": param_digest(model, env.device),
               "device": str(env.device), "backend": env.backend}
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump(res, f)
    finally:
        shutdown()
