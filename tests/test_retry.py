"""RetrySettings, CircuitBreaker and Resilient (kfmops/providers/resilient.py); the kill switch (engine/gates.py).

The breaker's state machine is checked with a fake clock. Everything else runs a real Redis provider
against the shared Redis through a FaultProxy (tests/faultproxy.py), or against a Redis of the test's
own that wants a password: no mocks, real errors from a real client.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from faultproxy import DedicatedRedis, FaultProxy
from servers import REQUIRED, address_of, open_provider, unique_tag

from kfmops.engine.gates import KILL_SWITCH_VARIABLE, kill_switch
from kfmops.errors import BackendError, InputError
from kfmops.providers.registry import Providers
from kfmops.providers.resilient import CircuitBreaker, CircuitOpen, Resilient, RetrySettings
from kfmops.references import Reference
from kfmops.workspace import load_workspace

KEYS = "kfmops-test:"

# settings ----------------------------------------------------------------------------------------------------------


def test_settings_default_and_from_config() -> None:
    assert RetrySettings.from_config({}) == RetrySettings()
    settings = RetrySettings.from_config({"attempts": 4, "max_seconds": 5, "base_delay": 0.05, "open_seconds": 2})
    assert (settings.attempts, settings.max_seconds, settings.base_delay, settings.open_seconds) == (4, 5, 0.05, 2)
    assert settings.failure_threshold == RetrySettings().failure_threshold


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"attempt": 3}, "retry.attempt: unknown setting"),
        ({"attempts": 0}, "retry.attempts: 0 is not allowed"),
        ({"failure_threshold": 2.5}, "retry.failure_threshold: 2.5 is not allowed"),
        ({"base_delay": -1}, "retry.base_delay: -1 is not allowed"),
        ({"max_seconds": "30s"}, "retry.max_seconds: '30s' is not allowed"),
        ({"attempts": True}, "retry.attempts: True is not allowed"),
    ],
)
def test_settings_refuse_unknown_keys_and_bad_values(raw: dict, named: str) -> None:
    with pytest.raises(InputError) as refused:
        RetrySettings.from_config(raw, "kfmops.yaml")
    assert f"kfmops.yaml: {named}" in str(refused.value)


def test_backoff_is_full_jitter_capped_by_max_delay() -> None:
    """After the n-th failure the sleep is uniform in [0, min(max_delay, base_delay * 2^(n-1))]."""
    settings = RetrySettings(base_delay=0.1, max_delay=1.0)
    for failures in range(1, 8):
        cap = min(1.0, 0.1 * 2 ** (failures - 1))
        sleeps = [settings.backoff(failures) for _ in range(400)]
        assert all(0 <= s <= cap for s in sleeps)
        assert min(sleeps) < cap * 0.1 and max(sleeps) > cap * 0.9  # spread over the whole range: full jitter


# the breaker's state machine (fake clock) ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_at_threshold_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("cache", threshold=3, open_seconds=10, clock=clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert breaker.state == "closed"
    breaker.before_call()  # closed: allowed
    breaker.failed()
    assert breaker.state == "open" and breaker.times_opened == 1
    clock.now += 4
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.wait == pytest.approx(6) and refused.value.retryable
    assert "backend 'cache': circuit open after 3 consecutive failures" in str(refused.value)


def test_breaker_half_open_probe_closes_or_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("graph", threshold=2, open_seconds=5, clock=clock)
    breaker.failed()
    breaker.failed()
    clock.now += 5
    assert breaker.state == "half-open" and breaker.remaining() == 0
    breaker.before_call()  # the probe is let through
    breaker.failed()  # one failed probe reopens at once, whatever the count
    assert breaker.state == "open" and breaker.remaining() == pytest.approx(5) and breaker.times_opened == 2
    clock.now += 5
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.failures == 0


# Resilient around a real Redis provider, through the fault proxy -------------------------------------------------


@pytest.fixture(scope="module")
def redis_target() -> tuple[str, int]:
    parts = urlsplit(address_of("redis"))
    return parts.hostname or "127.0.0.1", parts.port or 6379


@pytest.fixture
def proxy(redis_target: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(redis_target, lifetime=120) as started:
        yield started


def redis_workspace(root: Path, url_variable: str, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kfmops.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Workspace\nbackends:\n"
        f'  cache: {{type: redis, url_env: {url_variable}, prefixes: ["{KEYS}"], timeout: 0.5}}\n'
        "routes: {cache: cache}\n" + extra,
        encoding="utf-8",
    )
    return root


@pytest.fixture
def provider(proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The real RedisProvider (no retries of its own) reaching the shared Redis through `proxy`."""
    monkeypatch.setenv("KFMOPS_RETRY_TEST_REDIS_URL", f"redis://127.0.0.1:{proxy.port}/0")
    inner = open_provider(load_workspace(redis_workspace(tmp_path / "ws", "KFMOPS_RETRY_TEST_REDIS_URL")), "cache")
    try:
        yield inner
    finally:
        inner.close()


KEY = Reference("dataset.retry.cache", "cache", "cache", {"key": f"{KEYS}{unique_tag('retry')}:current"})


class Retries:
    """The on_retry callback: every (backend, error class) reported, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, backend: str, error_class: str) -> None:
        self.seen.append((backend, error_class))


def heal_after(proxy: FaultProxy, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, proxy.set_mode, args=("pass",))
    timer.start()
    return timer


def test_passing_backend_is_called_once(provider, proxy: FaultProxy) -> None:
    retries = Retries()
    resilient = Resilient(provider, RetrySettings(), retries)
    assert resilient.read([KEY]) == {KEY.address: None}
    assert retries.seen == [] and resilient.breaker.state == "closed"
    assert resilient.kinds == provider.kinds  # everything else is the inner provider's


def test_transient_refusal_is_retried_until_the_server_answers(provider, proxy: FaultProxy) -> None:
    retries = Retries()
    resilient = Resilient(
        provider,
        RetrySettings(attempts=20, max_seconds=10, base_delay=0.05, max_delay=0.2, failure_threshold=50),
        retries,
    )
    proxy.set_mode("refuse")
    timer = heal_after(proxy, 0.5)
    try:
        assert resilient.read([KEY]) == {KEY.address: None}
    finally:
        timer.join()
    assert retries.seen and set(retries.seen) == {("cache", "ConnectionError")}
    assert resilient.breaker.state == "closed" and resilient.breaker.failures == 0


def test_attempt_budget_gives_up_naming_backend_calls_and_cause(provider, proxy: FaultProxy) -> None:
    retries = Retries()
    resilient = Resilient(
        provider, RetrySettings(attempts=3, max_seconds=10, base_delay=0.01, failure_threshold=10), retries
    )
    proxy.set_mode("refuse")
    with pytest.raises(BackendError) as failed:
        resilient.write([(KEY, "v1")])
    message = str(failed.value)
    assert message.startswith("backend 'cache': ConnectionError") and "gave up after 3 calls" in message
    assert "circuit open" not in message  # 3 failures < threshold 10
    assert retries.seen == [("cache", "ConnectionError")] * 2  # 3 calls = 2 retries


def test_time_budget_bounds_a_black_hole(provider, proxy: FaultProxy) -> None:
    """Each call to a silent server costs its socket timeout (0.5 s); max_seconds stops the retries."""
    retries = Retries()
    resilient = Resilient(
        provider, RetrySettings(attempts=100, max_seconds=1.2, base_delay=0.01, failure_threshold=100), retries
    )
    proxy.set_mode("drop")
    started = time.monotonic()
    with pytest.raises(BackendError) as failed:
        resilient.read([KEY])
    elapsed = time.monotonic() - started
    assert "TimeoutError" in str(failed.value) and "gave up after" in str(failed.value)
    assert 1.0 <= elapsed < 1.2 + 0.5 + 0.5, elapsed  # no sleep past the budget; at most one call overruns it
    assert set(retries.seen) == {("cache", "TimeoutError")}


def test_open_circuit_fails_fast_without_calling_the_backend(provider, proxy: FaultProxy) -> None:
    retries = Retries()
    settings = RetrySettings(attempts=10, max_seconds=2, base_delay=0.01, failure_threshold=2, open_seconds=30)
    resilient = Resilient(provider, settings, retries)
    proxy.set_mode("cut")  # accept, then reset: every call that reaches the proxy is counted
    with pytest.raises(BackendError) as first:
        resilient.read([KEY])
    assert "circuit open after 2 consecutive failures" in str(first.value)  # waiting 30 s does not fit in 2 s
    assert resilient.breaker.state == "open"
    accepted = proxy.stats.accepted
    started = time.monotonic()
    with pytest.raises(CircuitOpen) as second:
        resilient.write([(KEY, "v1")])
    assert time.monotonic() - started < 0.1 and proxy.stats.accepted == accepted
    assert "not calling it for another" in str(second.value)
    assert retries.seen == [("cache", "ConnectionError")]  # only the first failure was followed by a retry


def test_call_waits_for_the_half_open_probe_within_budget(provider, proxy: FaultProxy) -> None:
    """An outage longer than the backoff but shorter than open_seconds is ridden out by the probe."""
    retries = Retries()
    settings = RetrySettings(attempts=5, max_seconds=5, base_delay=0.01, failure_threshold=2, open_seconds=0.8)
    resilient = Resilient(provider, settings, retries)
    proxy.set_mode("refuse")
    timer = heal_after(proxy, 0.4)
    started = time.monotonic()
    try:
        resilient.write([(KEY, "v1")])
    finally:
        timer.join()
    assert 0.8 <= time.monotonic() - started < 2
    assert resilient.read([KEY]) == {KEY.address: "v1"}
    assert resilient.breaker.state == "closed" and resilient.breaker.times_opened == 1
    assert retries.seen == [("cache", "ConnectionError")] * 2  # two real failures; the wait is not a retry
    resilient.write([(KEY, None)])


def test_permanent_error_is_raised_at_once_and_does_not_trip_the_breaker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis of this test that wants a password it is not given: authentication fails, nothing is retried."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (scripts/servers/redis.sh start installs it)"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = DedicatedRedis(tmp_path / "redis", password="s3cret-not-given")
    server.start()
    try:
        monkeypatch.setenv("KFMOPS_RETRY_TEST_REDIS_URL", server.url)
        inner = open_provider(load_workspace(redis_workspace(tmp_path / "ws", "KFMOPS_RETRY_TEST_REDIS_URL")), "cache")
        retries = Retries()
        resilient = Resilient(inner, RetrySettings(attempts=5, failure_threshold=1), retries)
        started = time.monotonic()
        with pytest.raises(BackendError) as failed:
            resilient.read([KEY])
        inner.close()
    finally:
        server.stop()
    assert "authentication" in str(failed.value).lower() and not failed.value.retryable
    assert time.monotonic() - started < 1 and retries.seen == []
    assert resilient.breaker.state == "closed"


def test_registry_wraps_every_provider_with_the_workspace_settings(
    proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFMOPS_RETRY_TEST_REDIS_URL", f"redis://127.0.0.1:{proxy.port}/0")
    workspace = load_workspace(
        redis_workspace(tmp_path / "ws", "KFMOPS_RETRY_TEST_REDIS_URL", "retry: {attempts: 2, base_delay: 0.01}\n")
    )
    retries = Retries()
    with Providers(workspace, on_retry=retries) as providers:
        cache = providers.get("cache", "cache")
        assert isinstance(cache, Resilient) and cache.settings.attempts == 2
        proxy.set_mode("refuse")
        with pytest.raises(BackendError, match="gave up after 2 calls"):
            cache.read([KEY])
    assert retries.seen == [("cache", "ConnectionError")]


# the kill switch -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "0", "false", "OFF", "no"])
def test_kill_switch_off_values(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KILL_SWITCH_VARIABLE, value)
    assert kill_switch({}) is None


@pytest.mark.parametrize("value", ["1", "true", "INC-4411", "yes please"])
def test_kill_switch_fails_closed(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KILL_SWITCH_VARIABLE, value)
    assert f"{KILL_SWITCH_VARIABLE} is set ({value})" == kill_switch({})


def test_kill_switch_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KILL_SWITCH_VARIABLE, raising=False)
    assert kill_switch({"kill_switch": False}) is None
    assert "apply.kill_switch is on (INC-4411)" in kill_switch({"kill_switch": "INC-4411"})
