"""What the user hears about a server: one message per kind of failure until a request succeeds
again, one when it is back, and facts about the server (a capped top-n, a missing feature) once."""

from __future__ import annotations

from typing import Callable

Notify = Callable[[str, str], None]  # (level: "error" | "warning" | "info", message)


class Health:
    def __init__(self, notify: Notify | None, base_url: str) -> None:
        self.notify = notify
        self.base_url = base_url
        self.down: str | None = None  # the kind of failure currently reported, None when healthy
        self._told: set[str] = set()

    def say(self, level: str, message: str) -> None:
        if self.notify is not None:
            try:
                self.notify(level, message)
            except Exception:  # noqa: BLE001 - telling the user must never break a request
                pass

    def failed(self, exc: Exception, kind: str) -> None:
        if self.down != kind:
            self.down = kind
            self.say("error", f"{exc}. Results stay empty until the server answers again (backend `openai`, "
                              f"`logitls.endpoint`).")

    def succeeded(self, model_name: str | None) -> None:
        if self.down is not None:
            self.down = None
            self.say("info", f"the inference server at {self.base_url} answers again ({model_name}).")

    def tell_once(self, key: str, level: str, message: str) -> None:
        """A fact about the server, not a failure: said once per backend, never marks it down."""
        if key not in self._told:
            self._told.add(key)
            self.say(level, message)
