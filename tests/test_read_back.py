"""vidvec.read_features reads a video's file in every layout vidvec writes into the same (arrays, provenance)
shape; a timeline pickle from elsewhere cannot run code while it is read."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from vidvec.cli import app
from vidvec import read_features
from vidvec.writers import (write_array, write_ego4d_features, write_hero_features,
                            write_latent_vector, write_lvs_timeline)

FEATURES = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_every_layout_reads_back_into_arrays_and_provenance(tmp_path):
    write_hero_features(tmp_path / "h.npz", FEATURES)
    arrays, provenance = read_features(tmp_path / "h.npz")
    assert provenance == {"layout": "hero"} and arrays["features"].dtype == np.float16

    vector = tmp_path / "output_vecs" / "output_latent_vec_v.npy"
    write_latent_vector(vector, FEATURES[0], predictions={"indices": [3, 1], "scores": [0.7, 0.2],
                                                          "labels": ["a", "b"]})
    arrays, provenance = read_features(vector)
    assert provenance == {"layout": "pyslowfast"}
    np.testing.assert_array_equal(arrays["video_vector"], FEATURES[0])
    assert arrays["video_topk_labels"].tolist() == ["a", "b"]

    write_array(tmp_path / "v_fps.npy", np.array(25.0))
    write_array(tmp_path / "v_timestamps_ms.npy", np.array([40.0, 80.0, 120.0]))
    write_array(tmp_path / "v_clip.npy", FEATURES)
    arrays, provenance = read_features(tmp_path / "v_clip.npy")
    assert provenance == {"layout": "video_features"} and arrays["fps"] == 25.0
    assert arrays["timestamps_ms"].tolist() == [40.0, 80.0, 120.0]

    write_ego4d_features(tmp_path / "uid.pt", FEATURES)
    arrays, provenance = read_features(tmp_path / "uid.pt")
    assert provenance == {"layout": "ego4d"}
    np.testing.assert_array_equal(arrays["features"], FEATURES)

    intervals = np.array([[0, 0.5], [0.5, 1], [1, 1.5]])
    write_lvs_timeline(tmp_path / "output_latent_vec_v.pk", "v", FEATURES, intervals)
    arrays, provenance = read_features(tmp_path / "output_latent_vec_v.pk")
    assert provenance == {"layout": "lvs-timeline", "name": "v"}
    np.testing.assert_array_equal(arrays["intervals"], intervals)

    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "output_latent_vec_v.pk")])
    assert result.exit_code == 0 and "intervals" in result.output and "lvs-timeline" in result.output


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_timeline_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pk").write_bytes(pickle.dumps({"v": {"features": _Payload(), "intervals": []}}))
    with pytest.raises(pickle.UnpicklingError, match="not part of a feature timeline"):
        read_features(tmp_path / "evil.pk")
    assert not (tmp_path / "PWNED").exists()
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "evil.pk")])
    assert result.exit_code == 2 and "not a vidvec feature file" in result.output
