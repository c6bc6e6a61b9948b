"""Provider keys at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key from settings."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class SecretBox:
    def __init__(self, secret: str) -> None:
        # Fernet wants 32 url-safe base64 bytes; derive them so any passphrase works.
        derived = hashlib.sha256(b"tollgate-provider-keys:" + secret.encode()).digest()
        self._key = base64.urlsafe_b64encode(derived)
        self._opened: Fernet | None = None

    def _fernet(self) -> Fernet:
        # cryptography costs a process some 7 MB: loaded with the first provider key it meets.
        if self._opened is None:
            from cryptography.fernet import Fernet

            self._opened = Fernet(self._key)
        return self._opened

    def encrypt(self, clear: str | None) -> str | None:
        return None if clear is None else self._fernet().encrypt(clear.encode()).decode()

    def decrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("a provider key cannot be decrypted: was settings.encryption_key changed?") from exc


def mask_secret(clear: str | None) -> str | None:
    """What a response shows of a provider key: that there is one, and its last characters."""
    if clear is None:
        return None
    return "***" + clear[-4:] if len(clear) >= 12 else "***"
