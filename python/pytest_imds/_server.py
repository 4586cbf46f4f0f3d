"""Starts, drives and stops one `imds serve` process."""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["ControlError", "Imds", "ImdsStartError", "Instance", "find_binary"]

#: Variables that would stop an SDK from reaching imds or from taking its credentials and region;
#: cleared while a server is active and restored afterwards.
CLEARED_ENVIRONMENT = (
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_V1_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)

#: Variables naming the shared credentials and config files, pointed at files that do not exist
#: while a server is active (so the machine's ~/.aws files cannot take imds' place), and restored
#: afterwards.
_SHARED_FILES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")

_EC2_API_VERSION = "2016-11-15"
_LONGEST_NOTICE_DELAY = 13 * 60  # EC2 interrupts at most 15 minutes ahead, the notice 2 before.

TomlValue = Union[str, int, float, bool, Sequence[Any], Mapping[str, Any]]


class ImdsStartError(RuntimeError):
    """`imds serve` could not be found, did not start, or did not answer in time."""


class ControlError(RuntimeError):
    """The control API refused an action; `code` is the EC2 error code (`InvalidParameterValue`, ...)."""

    def __init__(self, action: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{action} failed with HTTP {status}: {code}: {message}")
        self.action = action
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Instance:
    """An instance made by `Imds.run_instance` (fleet mode)."""

    instance_id: str
    private_ip: Optional[str]


def find_binary() -> str:
    """The `imds` binary: `$IMDS_BINARY`, else the one this package's wheel installed beside the
    interpreter's scripts, else the first on PATH."""
    override = os.environ.get("IMDS_BINARY")
    if override:
        if not os.access(override, os.X_OK):
            raise ImdsStartError(f"IMDS_BINARY={override} is not an executable file")
        return override
    name = "imds.exe" if sys.platform == "win32" else "imds"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("imds")
    if found:
        return found
    raise ImdsStartError(
        "no imds binary: install the pytest-imds wheel (it carries one), put imds on PATH, "
        "or set IMDS_BINARY to its path"
    )


# Every server still running, stopped at interpreter exit if nothing stopped it before.
_live: "set[Imds]" = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for server in leftovers:
        server.stop()


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to a TOML config file")


def to_toml(config: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document of nested tables (`[instance.tags]`) from nested dicts."""
    lines: List[str] = []
    tables: List[Tuple[str, Mapping[str, Any]]] = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            tables.append((f"{prefix}{_toml_key(key)}", value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        text += f"\n[{name}]\n" + to_toml(table, prefix=f"{name}.")
    return text


def _merge(base: Dict[str, Any], extra: Mapping[str, Any]) -> Dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(element: ElementTree.Element, *path: str) -> Optional[ElementTree.Element]:
    """The first descendant along `path` of local names, ignoring XML namespaces."""
    current = [element]
    for name in path:
        current = [c for e in current for c in e.iter() if _local(c.tag) == name and c is not e]
        if not current:
            return None
    return current[0]


def _text(element: ElementTree.Element, *path: str) -> Optional[str]:
    found = _find(element, *path)
    return found.text if found is not None else None


class Imds:
    """One `imds serve` on free loopback ports, for one test or one script.

    As a context manager it starts the server, points the AWS SDKs at it
    (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, with the variables that would bypass or disable IMDS
    cleared; see `CLEARED_ENVIRONMENT`) and, on exit, restores the environment and stops the
    server::

        with Imds(http_tokens="required", role="ci-runner") as imds:
            boto3.client("s3")  # takes imds' role credentials and region
            imds.spot_interrupt()

    The keyword arguments become the server's TOML config file (see `imds print-config`):
    `user_data`, `tags`, `role` (`[instance.iam] role`), the metadata options `http_tokens`,
    `http_endpoint`, `hop_limit`, `instance_metadata_tags`, `fleet` (`[server] fleet`), and
    `config`, a nested dict laid over all of them for any other key.
    """

    def __init__(
        self,
        *,
        http_tokens: Optional[str] = None,
        http_endpoint: Optional[str] = None,
        hop_limit: Optional[int] = None,
        instance_metadata_tags: Optional[str] = None,
        user_data: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        role: Optional[str] = None,
        fleet: bool = False,
        config: Optional[Mapping[str, Any]] = None,
        binary: Optional[str] = None,
        set_environment: bool = True,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        instance: Dict[str, Any] = {}
        if user_data is not None:
            instance["user_data"] = user_data
        if tags is not None:
            instance["tags"] = dict(tags)
        if role is not None:
            instance["iam"] = {"role": role}
        options = {
            "http_tokens": http_tokens,
            "http_endpoint": http_endpoint,
            "http_put_response_hop_limit": hop_limit,
            "instance_metadata_tags": instance_metadata_tags,
        }
        options = {k: v for k, v in options.items() if v is not None}
        if options:
            instance["metadata_options"] = options
        # A short grace period: a test's server has no long requests to let finish.
        self.config: Dict[str, Any] = {"server": {"fleet": fleet, "shutdown_grace_ms": 500}}
        if instance:
            self.config["instance"] = instance
        _merge(self.config, config or {})
        self.fleet = bool(self.config["server"].get("fleet", False))
        self._binary = binary
        self._set_environment = set_environment
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._process: Optional[subprocess.Popen[str]] = None
        self._workdir: Optional[tempfile.TemporaryDirectory[str]] = None
        self._saved_environment: Optional[Dict[str, Optional[str]]] = None
        self._url: Optional[str] = None
        self._control_url: Optional[str] = None
        self._instance_id: Optional[str] = None
        self._stdout: List[str] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Imds":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> "Imds":
        """Starts the server, waits until it answers and (unless `set_environment=False`)
        points the AWS SDKs at it. Raises `ImdsStartError` with the server's output when it
        does not come up."""
        if self._process is not None:
            raise RuntimeError("this Imds is already started")
        binary = self._binary or find_binary()
        self._workdir = tempfile.TemporaryDirectory(prefix="pytest-imds-")
        work = Path(self._workdir.name)
        config_file = work / "imds.toml"
        config_file.write_text(to_toml(self.config))
        self.access_log = work / "access.log"
        self._stderr_path = work / "stderr.log"
        # The server's settings come from the config file and flags here, not from IMDS_*
        # variables of the calling environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMDS_")}
        env.setdefault("RUST_LOG", "info")
        command = [
            binary, "serve",
            "--config", str(config_file),
            "--listen", "127.0.0.1:0",
            "--control-listen", "127.0.0.1:0",
            "--access-log", str(self.access_log),
        ]  # fmt: skip
        with open(self._stderr_path, "w") as stderr:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=env,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            except OSError as error:
                self._cleanup_files()
                raise ImdsStartError(f"cannot run {binary}: {error}") from error
        with _live_lock:
            _live.add(self)
        try:
            self._await_addresses()
            self._instance_id = self._await_control()
        except BaseException:
            self.stop()
            raise
        if self._set_environment:
            self._point_environment()
        return self

    def stop(self) -> None:
        """Restores the environment and stops the server: SIGTERM, then SIGKILL to its process
        group after `stop_timeout` seconds. Safe to call more than once."""
        self._restore_environment()
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self._stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # anything left in its group
            except (ProcessLookupError, PermissionError):
                pass
            if process.poll() is None:
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        with _live_lock:
            _live.discard(self)
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def _failure(self, reason: str) -> ImdsStartError:
        stderr = ""
        try:
            stderr = self._stderr_path.read_text()[-4000:]
        except OSError:
            pass
        return ImdsStartError(
            f"imds serve {reason}\n--- stdout ---\n{''.join(self._stdout)}--- stderr ---\n{stderr}"
        )

    def _await_addresses(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        stdout = self._process.stdout

        def read() -> None:  # keeps draining stdout so the server never blocks on it
            try:
                for line in stdout:
                    lines.put(line)
            except (OSError, ValueError):
                pass
            lines.put(None)

        threading.Thread(target=read, name="imds-stdout", daemon=True).start()
        deadline = time.monotonic() + self._startup_timeout
        while self._url is None or self._control_url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._failure(f"printed no addresses in {self._startup_timeout} s") from None
            if line is None:
                code = self._process.wait()
                raise self._failure(f"exited with status {code} before printing its addresses")
            self._stdout.append(line)
            if line.startswith("listening on ") and self._url is None:
                self._url = line.split(" ", 2)[2].strip()
            elif line.startswith("control API on "):
                self._control_url = line.split(" ", 3)[3].strip()

    def _await_control(self) -> Optional[str]:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                answer = self.call("DescribeInstances")
                break
            except (OSError, urllib.error.URLError) as error:
                if time.monotonic() > deadline:
                    raise self._failure(f"did not answer on its control API: {error}") from error
                time.sleep(0.05)
        instance_id = _text(answer, "instancesSet", "instanceId")
        if instance_id is None and not self.fleet:
            raise self._failure("described no instance")
        return instance_id  # a fleet may start empty

    def _point_environment(self) -> None:
        names = ("AWS_EC2_METADATA_SERVICE_ENDPOINT", *CLEARED_ENVIRONMENT, *_SHARED_FILES)
        self._saved_environment = {name: os.environ.get(name) for name in names}
        for name in CLEARED_ENVIRONMENT:
            os.environ.pop(name, None)
        # The machine's ~/.aws/credentials and ~/.aws/config come before IMDS in every SDK's
        # chain: files that do not exist stand in for them while the server is active.
        work = Path(self._started(self._workdir.name if self._workdir else None))
        for name in _SHARED_FILES:
            os.environ[name] = str(work / f"no-{name.lower()}")
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.url

    def _restore_environment(self) -> None:
        saved, self._saved_environment = self._saved_environment, None
        for name, value in (saved or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # -- addresses ---------------------------------------------------------------------------

    def _started(self, value: Optional[str]) -> str:
        if value is None:
            raise RuntimeError("the server is not started: use `with Imds(...)` or .start()")
        return value

    @property
    def url(self) -> str:
        """The guest API, `http://127.0.0.1:PORT` (what AWS_EC2_METADATA_SERVICE_ENDPOINT says)."""
        return self._started(self._url)

    @property
    def control_url(self) -> str:
        """The control API (the EC2 Query API), `http://127.0.0.1:PORT`."""
        return self._started(self._control_url)

    @property
    def instance_id(self) -> str:
        """The instance's id; in fleet mode the first one's (the config file's first, else the
        first `run_instance` made)."""
        self._started(self._url)
        if self._instance_id is None:
            raise RuntimeError("the fleet has no instance yet: make one with run_instance()")
        return self._instance_id

    # -- control API -------------------------------------------------------------------------

    def call(self, action: str, **params: Union[str, int]) -> ElementTree.Element:
        """Sends one EC2 Query API action to the control API and returns the parsed XML answer.
        Raises `ControlError` with the EC2 error code when it is refused."""
        form = {"Action": action, "Version": _EC2_API_VERSION}
        form.update({k: str(v) for k, v in params.items()})
        request = urllib.request.Request(
            self.control_url + "/",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return ElementTree.fromstring(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            code, message = "Unknown", body.decode(errors="replace")
            try:
                root = ElementTree.fromstring(body)
                code = _text(root, "Error", "Code") or code
                message = _text(root, "Error", "Message") or message
            except ElementTree.ParseError:
                pass
            raise ControlError(action, error.code, code, message) from None

    def set_options(
        self,
        *,
        http_tokens: Optional[str] = None,
        http_endpoint: Optional[str] = None,
        hop_limit: Optional[int] = None,
        instance_metadata_tags: Optional[str] = None,
        http_protocol_ipv6: Optional[str] = None,
        instance_id: Optional[str] = None,
    ) -> None:
        """ModifyInstanceMetadataOptions: `http_tokens` optional|required, `http_endpoint` and
        `instance_metadata_tags` and `http_protocol_ipv6` enabled|disabled, `hop_limit` 1-64."""
        params = {
            "HttpTokens": http_tokens,
            "HttpEndpoint": http_endpoint,
            "HttpPutResponseHopLimit": hop_limit,
            "InstanceMetadataTags": instance_metadata_tags,
            "HttpProtocolIpv6": http_protocol_ipv6,
        }
        self.call(
            "ModifyInstanceMetadataOptions",
            InstanceId=instance_id or self.instance_id,
            **{k: v for k, v in params.items() if v is not None},
        )

    def spot_interrupt(
        self,
        action: str = "terminate",
        in_seconds: int = 0,
        *,
        rebalance: bool = True,
        instance_id: Optional[str] = None,
    ) -> ElementTree.Element:
        """SendSpotInstanceInterruptions: the notice (`spot/instance-action`) appears in
        `in_seconds` (0 to 780), the `action` (terminate, stop or hibernate) two minutes after
        it; the rebalance recommendation appears now unless `rebalance=False`."""
        if not 0 <= in_seconds <= _LONGEST_NOTICE_DELAY:
            raise ValueError(
                f"in_seconds={in_seconds}: from 0 to {_LONGEST_NOTICE_DELAY} (EC2 interrupts at "
                "most 15 minutes ahead, the notice two minutes before)"
            )
        return self.call(
            "SendSpotInstanceInterruptions",
            InstanceId=instance_id or self.instance_id,
            DurationBeforeInterruption=f"PT{int(in_seconds) + 120}S",
            InstanceInterruptionBehavior=action,
            RebalanceRecommendation="true" if rebalance else "false",
        )

    def add_fault(
        self,
        path: str = "*",
        *,
        method: Optional[str] = None,
        status: Optional[int] = None,
        count: Optional[int] = None,
        latency_ms: Optional[int] = None,
        probability: Optional[float] = None,
        rate_limit: Optional[int] = None,
        reset: bool = False,
        no_answer: bool = False,
        instance_id: Optional[str] = None,
    ) -> str:
        """InjectFault: requests matching `path` (a pattern such as `/latest/meta-data/iam/*`)
        and `method` get `status`, a delay, a reset or no answer, for the first `count` of them
        or with a `probability`. Returns the fault's id."""
        params: Dict[str, Union[str, int]] = {"Path": path}
        optional = {
            "Method": method,
            "Status": status,
            "Count": count,
            "Latency": f"{latency_ms}ms" if latency_ms is not None else None,
            "Probability": probability,
            "RateLimit": rate_limit,
            "Reset": "true" if reset else None,
            "NoAnswer": "true" if no_answer else None,
            "InstanceId": instance_id or (self.instance_id if self.fleet else None),
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return _text(self.call("InjectFault", **params), "faultId") or ""

    def faults(self, instance_id: Optional[str] = None) -> List[Dict[str, str]]:
        """DescribeFaults: each fault's settings and how often it `fired`, as strings."""
        params: Dict[str, Union[str, int]] = {}
        if instance_id or self.fleet:
            params["InstanceId"] = instance_id or self.instance_id
        answer = self.call("DescribeFaults", **params)
        fault_set = _find(answer, "faultSet")
        items = [] if fault_set is None else [i for i in fault_set if _local(i.tag) == "item"]
        return [{_local(leaf.tag): leaf.text or "" for leaf in item} for item in items]

    def clear_faults(self, *fault_ids: str, instance_id: Optional[str] = None) -> None:
        """ClearFaults: the given faults, or all."""
        params: Dict[str, Union[str, int]] = {
            f"FaultId.{n}": fault for n, fault in enumerate(fault_ids, start=1)
        }
        if instance_id or self.fleet:
            params["InstanceId"] = instance_id or self.instance_id
        self.call("ClearFaults", **params)

    def tag(self, instance_id: Optional[str] = None, **tags: str) -> None:
        """CreateTags: adds or replaces the instance's tags (visible under
        meta-data/tags/instance/ when `instance_metadata_tags="enabled"`)."""
        params: Dict[str, Union[str, int]] = {"ResourceId.1": instance_id or self.instance_id}
        for n, (key, value) in enumerate(tags.items(), start=1):
            params[f"Tag.{n}.Key"] = key
            params[f"Tag.{n}.Value"] = value
        self.call("CreateTags", **params)

    def run_instance(
        self,
        *,
        image_id: Optional[str] = None,
        instance_type: Optional[str] = None,
        subnet_id: Optional[str] = None,
        private_ip: Optional[str] = None,
        http_tokens: Optional[str] = None,
        hop_limit: Optional[int] = None,
        role: Optional[str] = None,
        key_name: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        user_data: Optional[str] = None,
    ) -> Instance:
        """RunInstances (fleet mode only): one more instance; returns its id and private IP."""
        if not self.fleet:
            raise RuntimeError("run_instance needs fleet mode: Imds(fleet=True) or mark.imds(fleet=True)")
        import base64

        params: Dict[str, Union[str, int]] = {"MinCount": 1, "MaxCount": 1}
        optional = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "SubnetId": subnet_id,
            "PrivateIpAddress": private_ip,
            "MetadataOptions.HttpTokens": http_tokens,
            "MetadataOptions.HttpPutResponseHopLimit": hop_limit,
            "IamInstanceProfile.Name": role,
            "KeyName": key_name,
            "UserData": base64.b64encode(user_data.encode()).decode() if user_data else None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if tags:
            params["TagSpecification.1.ResourceType"] = "instance"
            for n, (key, value) in enumerate(tags.items(), start=1):
                params[f"TagSpecification.1.Tag.{n}.Key"] = key
                params[f"TagSpecification.1.Tag.{n}.Value"] = value
        answer = self.call("RunInstances", **params)
        instance_id = _text(answer, "instancesSet", "instanceId")
        if instance_id is None:
            raise ControlError("RunInstances", 200, "NoInstance", "the answer named no instance")
        if self._instance_id is None:
            self._instance_id = instance_id
        return Instance(instance_id, _text(answer, "instancesSet", "privateIpAddress"))

    @property
    def region(self) -> str:
        """The region imds serves: the instance's (`us-east-1` unless `config` places it
        elsewhere). The control API refuses requests signed for another region."""
        placement = self.config.get("instance", {}).get("placement", {})
        if placement.get("region"):
            return str(placement["region"])
        zone = placement.get("availability_zone")
        return str(zone)[:-1] if zone else "us-east-1"

    def ec2(self) -> Any:
        """A boto3 EC2 client on the control API (the region imds serves, dummy credentials)."""
        try:
            import boto3
        except ImportError as error:
            raise ImportError("Imds.ec2() needs boto3: pip install boto3") from error
        return boto3.client(
            "ec2",
            endpoint_url=self.control_url,
            region_name=self.region,
            aws_access_key_id="AKIAIMDSTESTCONTROL1",
            aws_secret_access_key="pytest-imds-control",
        )

    # -- access log --------------------------------------------------------------------------

    def requests(self, wait_for: int = 0, timeout: float = 5.0) -> List[Dict[str, Any]]:
        """The guest requests so far, one dict per access-log line (`method`, `path`, `status`,
        `version` v1|v2, `pid`, `cmdline`, ...). The log is written by a separate thread: with
        `wait_for=N`, waits up to `timeout` seconds for at least N lines."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.access_log.read_text()
            except FileNotFoundError:
                text = ""
            complete = text[: text.rfind("\n") + 1]
            lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)
