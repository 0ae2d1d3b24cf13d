"""What every protocol handler of one server shares: the model, the scheduler, the limits, the key."""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from ..model import NemotronModel
from .metrics import Metrics
from .scheduler import Limits, Scheduler

__all__ = ["ServerState", "model_id_of", "openai_error", "prompt_hotwords"]

#: What clients may send as the language of an English model (ISO-639-1, a locale, or the name).
_ENGLISH = ("en", "english")


def openai_error(status: int, message: str, *, kind: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None) -> JSONResponse:
    """An error as OpenAI's API answers one (the openai SDK raises it as the status's exception class)."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def prompt_hotwords(prompt: str) -> List[str]:
    """OpenAI's ``prompt`` as phrases to boost: what clients put there for this model is the vocabulary
    to expect ("ZyntriQix, Digique Plus, CynapseSix", as OpenAI's guide writes it), so phrases are split
    at commas, semicolons and line breaks."""
    return [p.strip() for p in re.split(r"[,;\n]", prompt) if p.strip()]


def model_id_of(model: NemotronModel) -> str:
    """The name the server gives its model: the file's name without ``.gguf``."""
    name = os.path.basename(model.path)
    return name[:-5] if name.lower().endswith(".gguf") else name


@dataclass
class ServerState:
    model: NemotronModel
    scheduler: Scheduler
    limits: Limits
    api_key: Optional[str] = None
    model_id: str = ""
    stream_latency_ms: int = 160  #: of Realtime and Riva streams that do not choose theirs
    language: Optional[str] = None  #: of sessions that name none (None: the model's default)

    def __post_init__(self) -> None:
        if not self.model_id:
            self.model_id = model_id_of(self.model)
        if self.language is not None:
            self.language = self.language_for(self.language)

    @property
    def metrics(self) -> Metrics:
        return self.scheduler.metrics

    def key_matches(self, authorization: Optional[str]) -> bool:
        """Whether an ``Authorization`` value (``Bearer KEY``) carries the key; any does without a key."""
        if self.api_key is None:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def check_http_key(self, connection: HTTPConnection) -> Optional[JSONResponse]:
        """None when the request may go on, else OpenAI's 401 answer."""
        if self.key_matches(connection.headers.get("authorization")):
            return None
        self.metrics.error("http", "401")
        return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")

    def language_for(self, requested: str) -> Optional[str]:
        """The model's language for what a client asked (``""``: the default, None): a multilingual
        model's code, matched without regard to case or ``_``/``-`` (``de_de`` is ``de-DE``), or by its
        language alone (``de``: the first ``de-...`` the model knows); for an English model None, once
        the request is English. A ValueError names what the model knows."""
        code = requested.strip().replace("_", "-")
        languages = self.model.languages
        if not languages:
            if code and code.split("-")[0].lower() not in _ENGLISH:
                raise ValueError(f"this model recognizes English only (language 'en'), not {requested!r}")
            return None
        if not code:
            return self.language
        for known in languages:
            if known.lower() == code.lower():
                return known
        for known in languages:
            if known.lower().split("-")[0] == code.lower():
                return known
        raise ValueError(f"this model knows the languages {', '.join(languages)}, not {requested!r}")

    def model_card(self) -> Dict[str, Any]:
        """The model as OpenAI's ``/v1/models`` lists one."""
        return {"id": self.model_id, "object": "model", "created": int(os.path.getmtime(self.model.path)),
                "owned_by": "nemotron-cpp"}
