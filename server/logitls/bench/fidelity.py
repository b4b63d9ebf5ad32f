"""How far a quantised setting (packed 4-bit weights, bf16) moves the numbers from the exact path.

On a fixed text set (code, prose, a chat) every position's next-token distribution is computed by
both; per position the KL divergence KL(exact ‖ other) in nats, whether the top token agrees, and
the largest absolute difference among the probabilities of the exact path's top-n tokens (what a
completion menu or a hover shows). The bar a setting must meet to be a default: mean KL < 1e-3
nats and top-1 agreement ≥ 99.5 %.
"""

from __future__ import annotations

from typing import Any

KL_BAR = 1e-3
TOP1_BAR = 0.995

CODE = '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Inventory:
    """Items on hand, by name, with the price each was bought at."""

    items: dict[str, int] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, count: int, price: float) -> None:
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        self.items[name] = self.items.get(name, 0) + count
        self.prices[name] = price

    def remove(self, name: str, count: int) -> int:
        held = self.items.get(name, 0)
        taken = min(held, count)
        if taken == held:
            self.items.pop(name, None)
        else:
            self.items[name] = held - taken
        return taken

    def value(self) -> float:
        return sum(self.prices[name] * count for name, count in self.items.items())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"items": self.items, "prices": self.prices}, indent=2))


def load(path: Path) -> Inventory:
    data = json.loads(path.read_text())
    return Inventory(dict(data["items"]), dict(data["prices"]))


if __name__ == "__main__":
    stock = Inventory()
    stock.add("apples", 12, 0.5)
    stock.add("pears", 4, 0.75)
    print(stock.remove("apples", 5), stock.value())
'''

PROSE = (
    "The river rises in the hills to the north of the town and runs south through a wide valley of farms "
    "and small woods before it reaches the sea. For most of the year it is slow and shallow, and children "
    "wade across it in the summer to reach the islands where herons nest. In the spring, when the snow on "
    "the hills melts, it can rise by two metres in a single night, and the old stone bridge in the centre of "
    "the town has been damaged three times in the last hundred years. After the last flood the council built "
    "a wall along the eastern bank and planted willows on the meadows upstream, which hold back the water "
    "and give it room to spread. The town's museum keeps a record of every flood since 1820: the date, the "
    "height of the water at the bridge, and the streets that were under water. Reading it, you can see the "
    "floods becoming less frequent after the wall was built, but also higher, because the water that once "
    "spread over the fields now has nowhere to go but down the channel. Engineers are now studying whether "
    "to open some of the old meadows again, so that the river can flood where it does no harm."
)

CHAT = [
    {"role": "user", "content": "What is the difference between a list and a tuple in Python?"},
    {"role": "assistant", "content": "A list is mutable: you can add, remove or change its items after it is "
                                     "created. A tuple is immutable: once created, its items cannot change. "
                                     "Tuples can therefore be used as dictionary keys when their items are "
                                     "hashable, and they signal that a collection has a fixed size."},
    {"role": "user", "content": "When should I use one or the other?"},
    {"role": "assistant", "content": "Use a list for a collection of similar things that grows or shrinks, such "
                                     "as lines read from a file. Use a tuple for a fixed group of different "
                                     "things that belong together, such as a point's x and y coordinates or a "
                                     "row returned from a database."},
]


def fidelity_texts(tokenizer) -> dict[str, str]:
    try:
        chat = tokenizer.apply_chat_template(CHAT, tokenize=False)
    except Exception:  # noqa: BLE001 - a tokenizer without a chat template
        chat = "\n".join(f"{m['role']}: {m['content']}" for m in CHAT)
    return {"code": CODE, "prose": PROSE, "chat": chat}


def distributions(engine, ids: list[int], stepwise: bool = False):
    """Every position's next-token log-probabilities: one forward over the text, or (`stepwise`) one
    token at a time on a KV cache, as keystrokes and greedy decoding compute them."""
    import torch

    model = engine.model
    with torch.inference_mode():
        if not stepwise:
            return torch.log_softmax(model.forward(ids, model.new_cache(), 0), dim=-1)
        cache = model.new_cache()
        rows = [model.forward([token], cache, 1)[-1] for token in ids]
        return torch.log_softmax(torch.stack(rows), dim=-1)


def _stepwise_differs(engine) -> bool:
    """The fp32 block kernel computes a prefill with the dense weights' GEMM (the exact numbers) and a
    keystroke's few rows on the blocks: its fidelity is that of the step-by-step path."""
    return getattr(engine.loaded, "kernel", "") == "fp32"


def compare(exact, other, top_n: int = 10) -> dict[str, Any]:
    """Every position of the fixed texts, `other` against `exact` (two engines on the same tokenizer)."""
    import torch

    kls, agree, worst, positions = [], 0, 0.0, 0
    for text in fidelity_texts(exact.tokenizer).values():
        ids = exact.tokenizer(text)["input_ids"][: exact.context_window]
        stepwise = _stepwise_differs(other)
        reference, candidate = distributions(exact, ids), distributions(other, ids, stepwise)
        kl = (reference.exp() * (reference - candidate)).sum(dim=-1).clamp_min(0)
        kls.append(kl)
        agree += int((reference.argmax(dim=-1) == candidate.argmax(dim=-1)).sum())
        top = reference.topk(top_n, dim=-1).indices
        difference = (reference.gather(1, top).exp() - candidate.gather(1, top).exp()).abs().max()
        worst = max(worst, float(difference))
        positions += len(ids)
    every = torch.cat(kls)
    mean_kl, top1 = float(every.mean()), agree / positions
    return {"positions": positions, "mean_kl": mean_kl, "p99_kl": float(torch.quantile(every, 0.99)),
            "top1_agreement": top1, "worst_top_n_abs_error": worst, "top_n": top_n,
            "meets_bar": mean_kl < KL_BAR and top1 >= TOP1_BAR, "stepwise": _stepwise_differs(other)}
