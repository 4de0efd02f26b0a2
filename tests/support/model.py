"""A tiny model bundle for worker tests: random-initialised Inception v3 at 75 px, tapped at
mixed2 and mixed5 (max-pooled), trained in seconds on synthetic images. Its scores mean
nothing; the plumbing around them is what the worker tests prove."""

from __future__ import annotations

from pathlib import Path

import pytest

BRANDS = ("acme", "globex")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detector.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, n_images=40, brands=BRANDS, logo_fraction=0.5, seed=3, size=(200, 150))
    return out


@pytest.fixture(scope="session")
def tiny_bundle(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detector.train import TrainConfig, train_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    # two taps joined: the worker and rescore tests then prove a multi-tap embedding end to end
    # heads only (marks=False): the head tests need heads, and a random backbone's head
    # would lose to the drawn mark mined from the photos (detector.mining, tested apart)
    config = TrainConfig(augment=0, validation_pct=25.0, test_pct=10.0,
                         taps=("mixed2:max", "mixed5:max"), marks=False)
    return train_bundle(synth_dir, out, weights="none", input_size=75, progress=False,
                        config=config)


@pytest.fixture(scope="session")
def synth_images(synth_dir: Path) -> list[tuple[str, bytes]]:
    """(relative path, JPEG bytes) of every synthetic image, for an image server to serve."""
    return sorted((str(p.relative_to(synth_dir)), p.read_bytes())
                  for p in synth_dir.rglob("*.jpg"))
