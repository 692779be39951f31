"""Dynamic batching (no Ray): merged requests get their solo results; a bad one fails alone."""

import numpy as np
import pyarrow as pa
import pytest

from serving.batching import EmbedRequest, ScoreRequest, embed_batch, rows, score_batch
from serving.codecs import RequestError
from serving.service import Limits, ModelService


@pytest.fixture(scope="module")
def service(adult_cvae):
    return ModelService(adult_cvae, {"name": "adult"}, Limits(max_rows=50))


def assert_same_scores(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows and a.column_names == b.column_names
    for name in ("elbo", "log_px", "percentile"):
        np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-4, err_msg=name)
    assert a.column("top_columns").equals(b.column("top_columns"))


def test_merged_score_requests_get_their_solo_results(service, adult_test):
    requests = [ScoreRequest(adult_test.slice(0, 1), seed=1),
                ScoreRequest(adult_test.slice(1, 40), seed=2),
                ScoreRequest(adult_test.slice(41, 3), iwae_samples=4, seed=1),  # own group
                ScoreRequest(adult_test.slice(44, 7), seed=1, top_k=1)]  # own group
    assert rows(requests) == 51
    results = score_batch(service, requests)
    for request, result in zip(requests, results, strict=True):
        solo = service.score(request.table, request.iwae_samples, request.seed, request.top_k)
        assert_same_scores(result, solo)


def test_a_bad_request_fails_alone(service, adult_test):
    requests = [ScoreRequest(adult_test.slice(0, 5)),
                ScoreRequest(adult_test.slice(5, 60)),  # over max_rows = 50
                ScoreRequest(adult_test.slice(65, 5), seed=3)]
    first, bad, last = score_batch(service, requests)
    assert isinstance(bad, RequestError) and bad.status == 413
    assert_same_scores(first, service.score(requests[0].table))
    assert_same_scores(last, service.score(requests[2].table, seed=3))


def test_merged_embed_requests_get_their_solo_results(service, adult_test):
    requests = [EmbedRequest(adult_test.slice(i * 10, 10)) for i in range(3)]
    requests.append(EmbedRequest(adult_test.slice(30, 4), return_std=True))
    for request, result in zip(requests, embed_batch(service, requests), strict=True):
        solo = service.embed(request.table, request.return_std)
        assert result.column_names == solo.column_names
        np.testing.assert_allclose(np.stack([c.to_numpy() for c in result.columns]),
                                   np.stack([c.to_numpy() for c in solo.columns]), atol=1e-5)


def test_requests_and_answers_cross_processes_as_arrow_streams(service, adult_test):
    """Pickled (as Ray sends them to and from a model replica), a request keeps its options
    and exactly its rows; an answer unpickles as the table itself. A slice ships only its
    rows."""
    import pickle

    from serving.codecs import IpcTable

    rows_ = adult_test.slice(100, 3)
    for request in (ScoreRequest(rows_, iwae_samples=4, seed=7, top_k=1),
                    EmbedRequest(rows_, return_std=True)):
        wire = pickle.dumps(request)
        back = pickle.loads(wire)
        assert type(back) is type(request) and back.table.equals(rows_)
        assert {k: v for k, v in vars(back).items() if k != "table"} == \
            {k: v for k, v in vars(request).items() if k != "table"}
        assert len(wire) < len(pickle.dumps(type(request)(adult_test.slice(0, 3000)))) / 10
    answer = service.score(rows_)
    back = pickle.loads(pickle.dumps(IpcTable(answer)))
    assert isinstance(back, pa.Table) and back.equals(answer)
