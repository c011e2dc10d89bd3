import numpy as np

from inference.clustering import cluster_name, interest_centroids, kmeans, nearest, unit_rows


def blobs(rng, centres, n=30, noise=0.05):
    rows = [c + noise * rng.standard_normal((n, len(c))) for c in centres]
    return unit_rows(np.concatenate(rows)), np.repeat(np.arange(len(centres)), n)


def test_kmeans_recovers_separated_blobs_and_is_deterministic():
    rng = np.random.default_rng(1)
    centres = np.eye(4, 8, dtype=np.float32)
    x, truth = blobs(rng, centres)
    c1, labels = kmeans(x, 4, seed=3)
    c2, labels2 = kmeans(x, 4, seed=3)
    assert np.array_equal(labels, labels2) and np.allclose(c1, c2)
    # each true blob maps to exactly one cluster
    assert all(len(set(labels[truth == t])) == 1 for t in range(4))
    assert len(set(labels)) == 4
    assert np.allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(nearest(c1, x), labels)


def test_kmeans_never_asks_for_more_clusters_than_distinct_rows():
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    centroids, labels = kmeans(x, 5)
    assert len(centroids) == 2 and labels[0] == labels[1] != labels[2]


def test_interest_centroids_keep_separate_interests_as_medoids_heaviest_first():
    rng = np.random.default_rng(0)
    x, _ = blobs(rng, np.eye(3, 16, dtype=np.float32), n=4, noise=0.1)
    ids = [f"i{n}" for n in range(len(x))]
    weights = [1.0] * 4 + [5.0] * 4 + [0.5] * 4
    found = interest_centroids(ids, x, weights, max_clusters=3)
    assert len(found) == 3
    assert found[0].medoid_item in ids[4:8] and found[1].medoid_item in ids[:4]
    assert abs(sum(c.weight for c in found) - 1.0) < 1e-6
    assert interest_centroids(ids, x, weights, max_clusters=1)[0].medoid_item in ids[4:8]
    assert interest_centroids([], np.zeros((0, 16)), []) == []


def test_a_single_interest_stays_one_cluster():
    rng = np.random.default_rng(2)
    x, _ = blobs(rng, [np.eye(1, 16, dtype=np.float32)[0]], n=6, noise=0.05)
    assert len(interest_centroids([str(i) for i in range(6)], x, [1.0] * 6)) == 1


def test_cluster_names_come_from_the_nearest_titles():
    vectors = unit_rows(np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32))
    titles = ["REGENCY TEACUP AND SAUCER", "PINK REGENCY TEACUP", "DOORMAT RED"]
    name = cluster_name(np.array([1, 0], np.float32), vectors, titles, top=2)
    assert name.split(" · ")[:2] == ["regency", "teacup"]
    assert "doormat" not in name


def test_rows_are_scaled_to_unit_length_and_zero_rows_stay_zero():
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
