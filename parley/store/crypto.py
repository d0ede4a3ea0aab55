"""Encryption at rest for users' secrets and accounts' credentials, keyed by PARLEY_SECRET_KEY.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived from
PARLEY_SECRET_KEY with HKDF-SHA256, so any long random string serves as the setting. Changing
the setting makes stored secrets unreadable: they must then be set again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from parley.errors import SecretUnreadable

INFO = b"parley user secrets v1"
FINGERPRINT_INFO = b"parley secret fingerprints v1"


class SecretBox:
    """Encrypts and decrypts secret values; never holds or logs a plaintext."""

    def __init__(self, key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(
            key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._fingerprint_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=FINGERPRINT_INFO
        ).derive(key.encode())

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def fingerprint(self, value: str) -> str:
        """Eight hex digits that tell stored values apart (and show when one changed) without
        revealing them: keyed, so even a short, guessable value cannot be found from it."""
        return hmac.new(self._fingerprint_key, value.encode(), hashlib.sha256).hexdigest()[:8]

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken as exc:
            raise SecretUnreadable("a stored secret cannot be decrypted with this key") from exc


def secret_box(key: str | None) -> SecretBox | None:
    """The box for PARLEY_SECRET_KEY, or None when it is not set (secrets are then refused)."""
    return SecretBox(key) if key else None
