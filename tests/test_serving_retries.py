"""The ingress's answer when a model replica dies holding a request: the request goes to
another replica once; a second death is a 503 with Retry-After; the verb's own errors (4xx)
pass through unchanged. The handle is a stand-in here: what it raises is what Ray raises
(tests/integration/test_serving.py kills a real replica under load)."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from serving.codecs import RequestError
from serving.deployment import REPLICA_TRIES, VAEIngress


class Handle:
    """``handle.score.remote(...)`` answering from ``outcomes`` in turn (raise if exception)."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def __getattr__(self, verb):
        return self

    async def _answer(self):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def remote(self, *args):
        return self._answer()


def ingress(handle: Handle):
    cls = VAEIngress.func_or_class.__mro__[1]  # [0] is Serve's ingress wrapper
    instance = cls.__new__(cls)
    instance.model = handle
    return instance


def test_a_request_whose_replica_died_goes_to_another():
    handle = Handle(ActorDiedError(), "answer")
    assert asyncio.run(ingress(handle).score("request")) == "answer"
    assert handle.calls == 2


def test_a_request_two_replicas_died_holding_is_a_503_with_retry_after():
    handle = Handle(*[ActorDiedError()] * REPLICA_TRIES)
    with pytest.raises(RequestError) as e:
        asyncio.run(ingress(handle).embed("request"))
    assert e.value.status == 503 and e.value.headers["Retry-After"].isdigit()
    assert handle.calls == REPLICA_TRIES == 2


def test_the_verbs_own_error_passes_through_and_is_not_retried():
    cause = RequestError(422, "iwae_samples must be in 1..1024", "iwae_samples")
    handle = Handle(RayTaskError("score", "traceback", cause).as_instanceof_cause())
    with pytest.raises(RequestError) as e:
        asyncio.run(ingress(handle).score("request"))
    assert (e.value.status, e.value.column) == (422, "iwae_samples") and handle.calls == 1
