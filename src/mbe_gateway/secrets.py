"""Secrets by name: the environment first, then the OS keyring or an explicit opt-in file.

`secret:NAME` resolves to env MBE_GATEWAY_SECRET_<NAME> when set, else to the configured
backend:

- "auto": the OS keyring (service "mbe-gateway", username NAME), but only a secure one. On
  a headless box keyring falls back to `fail`/`null` or a plain-text file backend; rather
  than pretend, we say so and offer the two honest alternatives: environment variables, or
  the opt-in file.
- "keyring": whatever keyring is configured (the user chose it, e.g. keyrings.alt); a
  plain-text one is used with a warning in its description.
- "file": `secrets.json` in the data dir, created 0600 and refused if anyone else can read
  it; every use logs a warning, because it is plain text on disk.
- "env": environment variables only.

Keyring cannot list its entries, so the names we stored there are kept in a non-secret
index beside the data. Values never appear in logs, errors or reprs: errors name the
secret and how to set it, and any library message that happens to contain the value is
masked before it reaches an exception.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from mbe_gateway import paths
from mbe_gateway.config import SECRET_PREFIX, SecretRef, SecretsSettings
from mbe_gateway.errors import InsecureSecretFile, SecretError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger(__name__)

SERVICE: Final = "mbe-gateway"
FILE_NAME: Final = "secrets.json"
INDEX_NAME: Final = "secrets-index.json"

Location = Literal["env", "keyring", "file"]
_Safety = Literal["secure", "plaintext", "none"]
_R = TypeVar("_R")


@dataclass(frozen=True)
class SecretEntry:
    """A secret's name and every place it is set, in lookup order (the first one wins)."""

    name: str
    locations: tuple[Location, ...]


def env_var(name: str) -> str:
    """The environment variable that sets the secret `name`."""
    return paths.ENV_SECRET_PREFIX + name.upper()


class Secrets:
    """Looks up, stores and lists secrets; holds no values itself."""

    def __init__(self, settings: SecretsSettings, data_dir: Path) -> None:
        self._backend = settings.backend
        self._file = data_dir / FILE_NAME
        self._index = data_dir / INDEX_NAME
        self._keyring_backend: KeyringBackend | None = None

    def __repr__(self) -> str:
        return f"<Secrets backend={self._backend}>"

    # -- reading ---------------------------------------------------------------------------

    def get(self, ref_or_name: SecretRef | str) -> str:
        """The secret's value; SecretError (naming it and how to set it) when it is not set."""
        name = _name(ref_or_name)
        from_env = os.environ.get(env_var(name))
        if from_env:
            return from_env
        value = self._read_backend(name)
        if value:
            return value
        raise SecretError(f"secret {name} is not set; {self._how_to_set(name)}")

    def resolve_env(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """A copy of an environment mapping with every "secret:NAME" value resolved."""
        return {
            key: self.get(value.removeprefix(SECRET_PREFIX)) if value.startswith(SECRET_PREFIX) else value
            for key, value in mapping.items()
        }

    def _read_backend(self, name: str) -> str | None:
        if self._backend == "env":
            return None
        if self._backend == "file":
            return self._read_file().get(name)
        backend = self._keyring()
        if not self._keyring_usable(backend):
            return None  # the error says why, and what to do instead
        return _keyring_call(backend, "read", lambda: backend.get_password(SERVICE, name))

    # -- writing ---------------------------------------------------------------------------

    def set(self, name: str, value: str) -> str:
        """Store a secret in the configured backend; returns where it went (for the user)."""
        name = _name(name)
        if not value or value != value.strip() or "\n" in value:
            raise SecretError(f"secret {name}: the value is empty or has surrounding whitespace or newlines")
        if self._backend == "env":
            raise SecretError(
                f'[secrets] backend = "env": set the environment variable {env_var(name)} instead'
            )
        if self._backend == "file":
            secrets = self._read_file(warn=False)  # one warning per use: the write's
            secrets[name] = value
            self._write_file(secrets)
            return f"the secrets file {self._file}"
        backend = self._usable_keyring(f"cannot store secret {name}", name)
        _keyring_call(backend, "store", lambda: backend.set_password(SERVICE, name, value), value=value)
        self._write_index(self._indexed() | {name})
        return f"the keyring ({_backend_name(backend)})"

    def delete(self, name: str) -> None:
        """Remove a secret from the configured backend (not from the environment)."""
        name = _name(name)
        if self._backend == "env":
            raise SecretError(f'[secrets] backend = "env": unset the environment variable {env_var(name)}')
        if self._backend == "file":
            secrets = self._read_file(warn=False)
            if secrets.pop(name, None) is None:
                raise SecretError(f"secret {name} is not in {self._file}{self._env_note(name)}")
            self._write_file(secrets)
            return
        from keyring.errors import PasswordDeleteError

        backend = self._usable_keyring(f"cannot delete secret {name}", name)
        indexed = self._indexed()
        try:
            _keyring_call(
                backend,
                "delete",
                lambda: backend.delete_password(SERVICE, name),
                passthrough=PasswordDeleteError,
            )
        except PasswordDeleteError:
            self._write_index(indexed - {name})
            raise SecretError(f"secret {name} is not in the keyring{self._env_note(name)}") from None
        self._write_index(indexed - {name})

    def _env_note(self, name: str) -> str:
        if os.environ.get(env_var(name)):
            return f" (it is set by the environment variable {env_var(name)})"
        return ""

    # -- listing and describing ------------------------------------------------------------

    def entries(self) -> list[SecretEntry]:
        """Every secret we know of and where it is set; never reads a value from the keyring."""
        found: dict[str, list[Location]] = {}
        for var, value in os.environ.items():
            if var.startswith(paths.ENV_SECRET_PREFIX) and value:
                found.setdefault(var.removeprefix(paths.ENV_SECRET_PREFIX).lower(), []).append("env")
        stored: Location = "file" if self._backend == "file" else "keyring"
        names = frozenset(self._read_file()) if self._backend == "file" else self._indexed()
        for name in names:
            found.setdefault(name, []).append(stored)
        return [SecretEntry(name, tuple(found[name])) for name in sorted(found)]

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def is_degraded(self) -> bool:
        """Whether secrets lack a secure home here: no secure keyring (so only the environment),
        a plain-text keyring, or the opt-in file. `doctor` shows this as a warning."""
        if self._backend == "env":
            return False
        return self._backend == "file" or _safety(self._keyring()) != "secure"

    def backend_description(self) -> str:
        """One line for `doctor` and `secrets list`: where secrets come from, honestly."""
        env = f"environment variables {paths.ENV_SECRET_PREFIX}<NAME>"
        if self._backend == "env":
            return f"{env} only"
        if self._backend == "file":
            return f"{env}, then the plain-text file {self._file} (opted in; readable only by you)"
        backend = self._keyring()
        safety = _safety(backend)
        if safety == "secure":
            return f"{env}, then the OS keyring ({_backend_name(backend)})"
        if self._backend == "keyring" and safety == "plaintext":
            return (
                f"{env}, then the keyring {_backend_name(backend)}: WARNING, it stores secrets in plain text"
            )
        return f"{env} only: {_no_secure_keyring(backend, paths.ENV_SECRET_PREFIX + '<NAME>')}"

    def _how_to_set(self, name: str) -> str:
        if self._backend == "env":
            return f"set the environment variable {env_var(name)}"
        if self._backend != "file" and not self._keyring_usable(self._keyring()):
            return _no_secure_keyring(self._keyring(), env_var(name))
        return f"run `mbe-gateway secrets set {name}`, or set the environment variable {env_var(name)}"

    # -- the keyring -----------------------------------------------------------------------

    def _keyring(self) -> KeyringBackend:
        """keyring's chosen backend, looked up once (importing keyring costs ~0.2 s)."""
        if self._keyring_backend is None:
            import keyring

            self._keyring_backend = keyring.get_keyring()
        return self._keyring_backend

    def _keyring_usable(self, backend: KeyringBackend) -> bool:
        safety = _safety(backend)
        return safety == "secure" or (safety == "plaintext" and self._backend == "keyring")

    def _usable_keyring(self, failure: str, name: str) -> KeyringBackend:
        backend = self._keyring()
        if not self._keyring_usable(backend):
            raise SecretError(f"{failure}: {_no_secure_keyring(backend, env_var(name))}")
        return backend

    def _indexed(self) -> frozenset[str]:
        try:
            data = json.loads(self._index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError) as e:
            raise SecretError(f"{self._index}: unreadable index of secret names ({e}); remove it") from None
        names = data.get("keyring") if isinstance(data, dict) else None
        if not isinstance(names, list):
            raise SecretError(f"{self._index}: not an index of secret names; remove it")
        return frozenset(str(n) for n in names)

    def _write_index(self, names: frozenset[str]) -> None:
        _write_private(self._index, {"keyring": sorted(names)})

    # -- the opt-in file -------------------------------------------------------------------

    def _read_file(self, *, warn: bool = True) -> dict[str, str]:
        """The file's secrets; refuses a file that anyone but its owner could read or write."""
        try:
            fd = os.open(self._file, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise SecretError(f"{self._file}: cannot be opened ({e.strerror})") from None
        if warn:
            log.warning(
                "secrets are read from the plain-text file %s (opted in with [secrets] backend = "
                '"file"); an OS keyring would be safer',
                self._file,
            )
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            _refuse_if_exposed(self._file, info)
            raw = f.read()
        try:
            data = json.loads(raw)
        except ValueError:
            raise SecretError(f"{self._file}: is not valid JSON; fix or remove it") from None
        secrets = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
            raise SecretError(f'{self._file}: expected {{"secrets": {{"name": "value"}}}}; fix or remove it')
        return {str(k).lower(): v for k, v in secrets.items()}

    def _write_file(self, secrets: dict[str, str]) -> None:
        log.warning("secrets are written to the plain-text file %s (opted in)", self._file)
        _write_private(self._file, {"secrets": secrets})


def _name(ref_or_name: SecretRef | str) -> str:
    if isinstance(ref_or_name, SecretRef):
        return ref_or_name.name
    try:
        return SecretRef(ref_or_name.removeprefix(SECRET_PREFIX)).name
    except ValueError:
        raise SecretError("a secret's name is letters, digits and _ (e.g. telegram_token)") from None


def _refuse_if_exposed(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InsecureSecretFile(f"{path}: is not a regular file; remove it")
    if info.st_uid != os.getuid():
        raise InsecureSecretFile(f"{path}: belongs to another user; it must be yours alone")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise InsecureSecretFile(
            f"{path}: others can access it (mode {mode:o}); refusing to use it. Fix: chmod 600 {path}"
        )


def _write_private(path: Path, data: Any) -> None:
    """Replace `path` atomically with a file created 0600 (the mode is set at creation, so no umask
    can widen it, and no reader ever sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SecretError(f"{path}: cannot be written ({e.strerror})") from None


def _backend_name(backend: KeyringBackend) -> str:
    kind = type(backend)
    return f"{kind.__module__}.{kind.__qualname__}"


def _safety(backend: KeyringBackend) -> _Safety:
    """keyring's own bar: a backend with priority >= 1 is 'recommended' (an OS store); below
    that it is a plain-text or otherwise weak fallback, and fail/null store nothing at all."""
    from keyring.backends import chainer, fail, null

    if isinstance(backend, fail.Keyring | null.Keyring):
        return "none"
    if isinstance(backend, chainer.ChainerBackend):
        chained = backend.backends
        return _safety(chained[0]) if chained else "none"
    try:
        priority = float(backend.priority)
    except Exception:  # keyring signals "not viable here" by raising from priority
        return "none"
    return "secure" if priority >= 1 else "plaintext"


def _no_secure_keyring(backend: KeyringBackend, variable: str) -> str:
    """Why the keyring is not used, and the two honest alternatives."""
    what = "no keyring at all" if _safety(backend) == "none" else "a plain-text store"
    return (
        f"no secure OS keyring is available here (keyring offers {_backend_name(backend)}: {what}). "
        f"Either set the environment variable {variable} (e.g. in the service unit), or opt in to "
        'a private file with [secrets] backend = "file" in the config'
    )


def _keyring_call(
    backend: KeyringBackend,
    doing: str,
    call: Callable[[], _R],
    value: str | None = None,
    passthrough: type[Exception] | None = None,
) -> _R:
    """Run one keyring operation, turning its failures into SecretError without the value."""
    try:
        return call()
    except Exception as e:
        if passthrough is not None and isinstance(e, passthrough):
            raise
        message = str(e)
        if value and value in message:
            message = message.replace(value, "***")
        raise SecretError(
            f"the keyring ({_backend_name(backend)}) could not {doing} the secret: "
            f"{type(e).__name__}: {message}"
        ) from None
