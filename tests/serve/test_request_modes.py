"""/recommend runs on the event loop without an LLM and in a thread with one (recsys/serve/app.py ServeState.inline);
either way the list is returned only after its record is committed, so feedback on it is accepted at once."""

import threading

import pytest

from recsys.pipeline.build import build_recommender, compose_serve
from recsys.serve.app import _calls_llm


class _Where:
    """A pass-through stage recording the thread it ran on."""

    def __init__(self):
        self.threads = []

    def __call__(self, ctx, cands, k=10):
        self.threads.append(threading.current_thread().name)
        return cands


@pytest.mark.parametrize("inline", [True, False])
def test_both_modes_serve_and_record_before_answering(make_app, inline):
    client, state = make_app(inline=inline)
    where = _Where()
    state.recommender.pipeline.stages["where"] = where
    for user in ("1", "2", "new-user"):
        r = client.post("/recommend", json={"user_id": user, "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        ack = client.post("/feedback", json={"request_id": body["request_id"], "item_id": body["items"][0]["item_id"],
                                             "event": "click"})
        assert ack.status_code == 200, ack.text
        assert ack.json()["new"] == [True]
    # threaded work runs on anyio's pool ("AnyIO worker thread"), inline work on the event loop's own thread
    pooled = ["AnyIO worker thread" in name for name in where.threads]
    assert pooled == [not inline] * 3, where.threads


def test_the_default_pipeline_runs_inline_and_an_llm_one_does_not(ml100k_dir):
    plain = build_recommender(compose_serve(["pipeline=untrained", f"paths.data_dir={ml100k_dir.parent}",
                                             "pipeline.sources.content=null"]))
    assert not _calls_llm(plain.pipeline)
    from tests.llm.llm_fakes import ScriptedBackend

    with_llm = build_recommender(compose_serve(["pipeline=untrained", f"paths.data_dir={ml100k_dir.parent}",
                                                "pipeline.sources.content=null", "llm=smollm2"]),
                                 backend=ScriptedBackend([]))
    assert _calls_llm(with_llm.pipeline)
