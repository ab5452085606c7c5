"""Cached trainings: reused when everything matches, recomputed when stale, corrupt or disabled."""

import pytest
import torch

from hw1utils import cache, models, train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HW1_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    return x, (x.sum(1) > 0).long()


def run(lr=1e-2, seed=0, name="t"):
    torch.manual_seed(seed)
    model = models.mlp(4, [8], 2)
    history = train.fit(model, problem(), epochs=2, lr=lr, batch_size=32, progress=False, device=CPU, cache=name)
    return model, history


def test_second_run_loads_the_first(cache_folder, monkeypatch):
    model, history = run()
    assert len(list(cache_folder.glob("t-*.pt"))) == 1
    monkeypatch.setattr(train, "_batches", lambda *a: pytest.fail("trained again instead of loading"))
    again, loaded = run()
    assert (loaded.train_loss, loaded.train_acc, loaded.seconds) == (history.train_loss, history.train_acc,
                                                                      history.seconds)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_a_hit_is_announced_once_per_entry_name(capsys):
    run(name="announced")
    assert "announced:" not in capsys.readouterr().out
    run(name="announced")
    run(name="announced")
    assert capsys.readouterr().out.count("announced: finished trainings loaded from the cache") == 1


def test_changed_settings_or_init_train_anew(cache_folder):
    run()
    run(lr=2e-2)
    run(seed=1)
    assert len(list(cache_folder.glob("t-*.pt"))) == 3


def test_corrupt_entry_is_recomputed(cache_folder):
    _, history = run()
    (entry,) = cache_folder.glob("t-*.pt")
    entry.write_bytes(entry.read_bytes()[:50])
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        _, again = run()
    assert again.train_loss == history.train_loss
    assert torch.load(entry, weights_only=True)["key"]


def test_entry_under_another_key_is_not_used(cache_folder):
    run()
    (entry,) = cache_folder.glob("t-*.pt")
    stored = torch.load(entry, weights_only=True)
    stored["key"] = "something else"
    stored["payload"]["histories"][0]["train_loss"] = [123.0]
    torch.save(stored, entry)
    with pytest.warns(UserWarning, match="stale cache entry"):
        _, history = run()
    assert history.train_loss[-1] != 123.0


def test_disabled_cache_writes_nothing(cache_folder, monkeypatch):
    monkeypatch.setenv("HW1_CACHE", "off")
    run()
    assert not cache_folder.exists()


def test_fingerprint_sees_code_data_and_structure():
    a = cache.fingerprint(torch.zeros(3), {"lr": 1e-3})
    assert a == cache.fingerprint(torch.zeros(3), {"lr": 1e-3})
    assert a != cache.fingerprint(torch.zeros(3), {"lr": 1e-2})
    assert a != cache.fingerprint(torch.zeros(3, dtype=torch.float64), {"lr": 1e-3})
    assert cache.fingerprint([1, [2]]) != cache.fingerprint([[1], 2])
    assert len(cache.code_version()) == 16


def test_code_version_covers_the_training_sources_only(tmp_path):
    for name in ("plots.py", *cache.TRAINING_SOURCES):
        (tmp_path / name).write_text(f"# {name}\n")
    versions = [cache.source_hash(tmp_path)]
    (tmp_path / "plots.py").write_text("# edited\n")
    assert cache.source_hash(tmp_path) == versions[0]
    for name in cache.TRAINING_SOURCES:
        (tmp_path / name).write_text("# edited\n")
        versions.append(cache.source_hash(tmp_path))
    assert len(set(versions)) == len(versions)
    assert set(cache.TRAINING_SOURCES) == {"cache.py", "data.py", "models.py", "train.py"}
    assert cache.code_version() == cache.source_hash(cache.PACKAGE_DIR)


def test_ensemble_cache_roundtrip(cache_folder, monkeypatch):
    def build():
        return models.mlp(4, [8], 2)

    kw = dict(epochs=2, lr=[1e-2, 3e-2, 1e-2], batch_size=50, progress=False, device=CPU, cache="e")
    first = train.fit_ensemble(build, [0, 1, 2], problem(), **kw)
    monkeypatch.setattr(train, "_batches", lambda *a: pytest.fail("trained again instead of loading"))
    second = train.fit_ensemble(build, [0, 1, 2], problem(), **kw)
    assert [h.train_loss for h in second.histories] == [h.train_loss for h in first.histories]
    assert second.histories[0].seconds == first.histories[0].seconds
    torch.testing.assert_close(second.flat(), first.flat())


def test_a_hook_is_keyed_by_its_source_and_captured_values():
    def make_hook(scale):
        def hook(epoch, model):
            return {"value": scale * epoch}
        return hook

    def other_hook(epoch, model):
        return {"value": 2 * epoch}

    same = cache.fingerprint(make_hook(2)) == cache.fingerprint(make_hook(2))
    assert same and cache.fingerprint(make_hook(2)) != cache.fingerprint(make_hook(3))
    assert cache.fingerprint(make_hook(2)) != cache.fingerprint(other_hook)
