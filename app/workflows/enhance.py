"""`enhance_prompt`: restructure a prompt as subject + scene + motion + aesthetic + style (the Wan 2.2
prompt formula), with the camera phrase and the quality preset's aesthetic terms.

Local rules by default (deterministic, no network). With PROMPT_ENHANCER_URL set, an OpenAI-compatible
chat endpoint rewrites it instead, under a timeout; any failure (network, status, a reply that is empty
or too long) falls back to the local rules, and the reason is reported. The key is a secret (registered
for redaction, sent only in the Authorization header).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from app.redact import redact

log = logging.getLogger(__name__)

_SCENE = re.compile(
    r"\b(in|at|on|under|inside|near|across|through|over|beside|beneath|among|along|against|by the)\b", re.I
)
_CAMERA = re.compile(r"\b(camera|shot|zoom|pans?|dolly|tilts?|orbit|crane|handheld)\b", re.I)
DEFAULT_MOTION = "moving naturally with smooth, continuous motion"
DEFAULT_STYLE = "realistic style, coherent motion, stable details"
SYSTEM_PROMPT = (
    "You rewrite prompts for the Wan 2.2 video model. Answer with the rewritten prompt only, in English, "
    "as a few plain sentences in this order: subject, scene, motion, camera, aesthetic, style. Keep every "
    "fact of the original; add no new subjects. Keep the given camera move and aesthetic terms verbatim."
)


@dataclass(frozen=True)
class Enhanced:
    prompt: str
    by: str  # "local" | "remote" | "local (fallback: <reason>)"


def _clauses(text: str) -> list[str]:
    return [c.strip(" ,") for c in re.split(r"[.;!?\n]+", text) if c.strip(" ,")]


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def enhance_locally(
    prompt: str, *, camera_phrase: str | None = None, aesthetic: Sequence[str] = (), max_length: int = 2000
) -> str:
    """Subject (the first clause), scene (clauses placing it), motion (the rest, or a default), camera
    (the move's phrase, or camera words the prompt had), aesthetic terms, style; at most `max_length`."""
    clauses = _clauses(prompt)
    if not clauses:
        return prompt
    subject, rest = clauses[0], clauses[1:]
    camera = [c for c in rest if _CAMERA.search(c)]
    rest = [c for c in rest if c not in camera]
    scene = [c for c in rest if _SCENE.search(c)]
    motion = [c for c in rest if c not in scene]
    parts = [
        subject,
        ", ".join(scene),
        ", ".join(motion) or DEFAULT_MOTION,
        camera_phrase or ", ".join(camera),
        ", ".join(aesthetic),
        DEFAULT_STYLE,
    ]
    out = " ".join(_sentence(p) for p in parts if p)
    return out if len(out) <= max_length else out[:max_length].rsplit(" ", 1)[0]


async def enhance(
    prompt: str,
    *,
    camera_phrase: str | None = None,
    aesthetic: Sequence[str] = (),
    max_length: int = 2000,
    url: str | None = None,
    key: str | None = None,
    model: str = "gpt-4o-mini",
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Enhanced:
    """The enhanced prompt and who made it. Never raises for the remote side: it falls back."""
    local = enhance_locally(prompt, camera_phrase=camera_phrase, aesthetic=aesthetic, max_length=max_length)
    if not url:
        return Enhanced(local, "local")
    hints = []
    if camera_phrase:
        hints.append(f"Camera: {camera_phrase}.")
    if aesthetic:
        hints.append(f"Aesthetic terms: {', '.join(aesthetic)}.")
    body = {
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt + ("\n" + " ".join(hints) if hints else "")},
        ],
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport, trust_env=False) as client:
            resp = await client.post(url, json=body, headers=headers)
        if resp.status_code != 200:
            raise ValueError(f"HTTP {resp.status_code}")
        text = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("an empty reply")
        text = text.strip()
        if len(text) > max_length:
            raise ValueError(f"a reply of {len(text)} characters (limit {max_length})")
        return Enhanced(text, "remote")
    except Exception as exc:  # timeout, connection, JSON shape: the local rules still give a prompt
        reason = redact(f"{type(exc).__name__}: {exc}")[:200]
        log.warning("prompt enhancer failed (%s); using the local rules", reason)
        return Enhanced(local, f"local (fallback: {reason})")
