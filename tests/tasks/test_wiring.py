"""runtime/app.py, the composition root: what runs is built from the settings alone."""

from __future__ import annotations

from models.config import read_settings
from partners import shared_limits
from partners.config import simulator_config
from runtime import app as wiring
from runtime.execution import Execution


def test_the_engine_partners_and_limiter_follow_the_settings(tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    config = simulator_config("http://127.0.0.1:55123")
    settings = read_settings({"PRAKERJA_DATABASE_URL": url, "PRAKERJA_PARTNER_LIMITS": "process"})
    engine = wiring.build_engine(settings)
    try:
        assert str(engine.url) == url
        limits = Execution.from_settings(settings).partner_limits
        partners, pacer = wiring.build_partner_clients(engine, config, limits)
        assert pacer is None  # nothing shared beyond this process
        assert partners.issuer.settings.base_url == "http://127.0.0.1:55123/issuer"
        partners.close()

        _, pacer = wiring.build_partner_clients(engine, config, "database")
        assert isinstance(pacer, shared_limits.DatabaseRateLimits)
        pacer.close()
        prefect = settings.model_copy(update={"shared_rate_limits": True})
        limits = Execution.from_settings(prefect).partner_limits
        assert wiring.build_limiter(engine, config, limits) is shared_limits.take_partner_slot
    finally:
        engine.dispose()


def test_the_sqlite_tuning_comes_from_the_settings(tmp_path):
    settings = read_settings(
        {"PRAKERJA_DATABASE_URL": f"sqlite:///{tmp_path}/t.db", "PRAKERJA_SQLITE_CACHE_MB": "7"}
    )
    engine = wiring.build_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -7 * 1024
            # a sort of millions (intake's NIKs, the draw's pool) merges on two helpers
            assert conn.exec_driver_sql("PRAGMA threads").scalar() == 2
            # and the process's connections share one bound on their caches
            assert conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar() == 256 * 1024**2
    finally:
        engine.dispose()


def test_a_partners_file_named_in_the_settings_is_the_one_loaded(tmp_path):
    from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text

    path = tmp_path / "p.toml"
    path.write_text(simulator_partners_text("http://127.0.0.1:55124"))
    settings = read_settings({"PRAKERJA_PARTNERS": str(path)})
    config = wiring.load_partners(settings, env={SIMULATOR_KEY_ENV: "k"})
    assert config.source == str(path)
    assert config.notifier.base_url == "http://127.0.0.1:55124/notify"
