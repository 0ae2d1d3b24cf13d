"""What every protocol handler of one server shares: the model, the scheduler, the limits, the key."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from ..model import NemotronModel
from .metrics import Metrics
from .scheduler import Limits, Scheduler

__all__ = ["ServerState", "model_id_of", "LANGUAGES"]

#: What clients may send as the language of this English model (ISO-639-1, a locale, or the name).
LANGUAGES = ("en", "english")


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

    def __post_init__(self) -> None:
        if not self.model_id:
            self.model_id = model_id_of(self.model)

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
        return JSONResponse({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                       "param": None, "code": "invalid_api_key"}}, 401)

    def check_language(self, language: str) -> None:
        """Accepts English (or nothing); a ValueError names what this model does."""
        code = language.strip().lower().replace("_", "-")
        if code and code.split("-")[0] not in LANGUAGES:
            raise ValueError(f"this model recognizes English only (language 'en'), not {language!r}")

    def model_card(self) -> Dict[str, Any]:
        """The model as OpenAI's ``/v1/models`` lists one."""
        return {"id": self.model_id, "object": "model", "created": int(os.path.getmtime(self.model.path)),
                "owned_by": "nemotron-cpp"}
