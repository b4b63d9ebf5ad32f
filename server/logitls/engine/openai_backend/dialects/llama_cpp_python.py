"""llama-cpp-python's server (`python -m llama_cpp.server`): `/v1/models` says `owned_by: "me"`.
Hover from `echo` (exact rank within the top k, a bound below); see EchoDialect for its shifted echo."""

from __future__ import annotations

from .echo import EchoDialect


class LlamaCppPython(EchoDialect):
    name = "llama-cpp-python"
    shifted_by_default = True  # 0.3.x with a model without BOS; corrected by what the first echo shows

    sampling_fields = ("temperature", "top_k", "top_p", "min_p", "seed")

    @staticmethod
    def matches(entry: dict, owner: str) -> bool:
        return owner == "me"

    def request_extra(self) -> dict:
        # It applies repeat_penalty=1.1 unless told otherwise: greedy must be plain argmax.
        return {"repeat_penalty": 1.0}
