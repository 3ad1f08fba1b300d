"""LLM stages over a small candidate set: re-ranking, grounded explanations, conversation.

- ``backends/``: one interface (``generate``, ``score_choices``) for transformers (CPU/GPU),
  vLLM (GPU, lazily imported) and any OpenAI-compatible server.
- ``rerank.LLMReranker``: verbalizer (LlamaRec) or listwise re-ranking, permutation
  averaging (LLMRank), blending with the previous stage; batched via ``rerank_batch``.
- ``explain.Explainer``: one sentence per item from supplied facts, verified, template fallback.
- ``conversation.ConversationParser``: message -> ``Constraints`` or a clarifying question.
- ``accounting.LLMAccounting``: tokens, latency, failures; W&B sample table.
- ``factory.build_llm``: the backend (+ adapter, accounting) of one ``configs/llm/*.yaml``; its re-rank and
  explanation stages are declared in ``configs/pipeline/*.yaml`` and built by ``recsys.pipeline.build``.

Nothing heavy is imported here.
"""
