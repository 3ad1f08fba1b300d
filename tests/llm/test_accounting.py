from recsys.llm.accounting import LLMAccounting


def test_summary_is_exact():
    acc = LLMAccounting(max_samples=1)
    acc.record_batch("rerank", 4, prompt_tokens=400, generated_tokens=0, latency_ms=200.0, parse_failures=1, samples=[("p1", "o1"), ("p2", "o2")])
    acc.record_batch("rerank", 2, prompt_tokens=100, generated_tokens=10, latency_ms=100.0, invalid_ids=3)
    s = acc.summary()
    assert s["llm/rerank/requests"] == 6 and s["llm/rerank/batches"] == 2
    assert s["llm/rerank/prompt_tokens_per_request"] == 500 / 6
    assert s["llm/rerank/latency_ms_per_request"] == 50.0 and s["llm/rerank/requests_per_s"] == 20.0
    assert s["llm/rerank/invalid_ids"] == 3 and s["llm/rerank/parse_failure_rate"] == 1 / 6
    assert acc.samples == [("rerank", "p1", "o1")]


def test_log_wandb_offline(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    acc = LLMAccounting()
    acc.record_batch("explain", 1, 10, 5, 3.0, ungrounded=1, samples=[([{"role": "user", "content": "hi"}], "hello")])
    run = wandb.init(project="recsys-test", dir=str(tmp_path), mode="offline")
    try:
        acc.log_wandb(run)
    finally:
        run.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
