"""The partners file: the built-in one loads alone; a bad one is refused, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from partners.client import PartnerClient
from partners.config import (
    ConfigError,
    PartnersConfig,
    load_partners_config,
    simulator_config,
)

SECRET = "prod-key-Zq81xVv0"

GOOD = """
[registry]
base_url = "https://registry.example.id/api/"
api_key_env = "PRAKERJA_REGISTRY_API_KEY"
batch_size = 500
retry_attempts = 4

[[agencies]]
id = "civil-service"
category = "CIVIL_SERVANT"
effect = "exclude"
base_url = "https://bkn.example.id"
api_key_env = "PRAKERJA_AGENCY_KEY"

[[agencies]]
id = "manpower"
category = "LAID_OFF"
effect = "prioritize"
base_url = "https://kemnaker.example.id"
api_key_env = "PRAKERJA_AGENCY_KEY"

[[payment_providers]]
id = "wallet-a"
base_url = "https://wallet-a.example.id"
api_key_env = "PRAKERJA_WALLET_A_API_KEY"

[card_issuer]
base_url = "https://issuer.example.id"
api_key_env = "PRAKERJA_ISSUER_API_KEY"

[notifier]
base_url = "https://sms.example.id"
api_key_env = "PRAKERJA_NOTIFIER_API_KEY"
"""
ENV = {
    name: SECRET
    for name in (
        "PRAKERJA_REGISTRY_API_KEY",
        "PRAKERJA_AGENCY_KEY",
        "PRAKERJA_WALLET_A_API_KEY",
        "PRAKERJA_ISSUER_API_KEY",
        "PRAKERJA_NOTIFIER_API_KEY",
    )
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "partners.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str, env: dict | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_partners_config(path, env=ENV if env is None else env)
    message = str(caught.value)
    assert message.startswith(f"partners file {path}: ")
    assert SECRET not in message
    return message


def test_built_in_file_loads_with_no_environment_at_all():
    config = load_partners_config(env={})

    assert config.registry.base_url == "http://127.0.0.1:8700/registry"
    assert [(a.id, a.category, a.effect) for a in config.agencies] == [
        ("civil-service", "CIVIL_SERVANT", "exclude"),
        ("military-police", "MILITARY_POLICE", "exclude"),
        ("education", "STUDENT", "exclude"),
        ("village", "VILLAGE_OFFICIAL", "exclude"),
        ("legislature", "LEGISLATOR", "exclude"),
        ("soe", "SOE_BOARD", "exclude"),
        ("social-aid", "SOCIAL_AID", "exclude"),
        ("manpower", "LAID_OFF", "prioritize"),
    ]
    assert list(config.payment_providers) == ["bank-a", "bank-b", "wallet-a", "wallet-b"]
    assert config.card_issuer.id == "card-issuer"
    assert config.card_issuer.base_url == "http://127.0.0.1:8700/issuer"
    assert config.notifier.base_url == "http://127.0.0.1:8700/notify"
    assert config.registry.api_key == "simulator"


def test_environment_variable_names_the_file_to_load(tmp_path):
    path = write(tmp_path, GOOD)

    config = load_partners_config(env={**ENV, "PRAKERJA_PARTNERS": str(path)})

    assert config.source == str(path)
    assert config.registry.base_url == "https://registry.example.id/api"
    assert config.registry.batch_size == 500
    assert config.registry.retry.attempts == 4
    assert config.registry.api_key == SECRET


def test_a_missing_key_variable_is_refused_naming_field_and_variable(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "PRAKERJA_ISSUER_API_KEY"}

    message = refusal(tmp_path, GOOD, env)

    assert message.endswith(
        "[card_issuer].api_key_env: environment variable PRAKERJA_ISSUER_API_KEY is not set"
    )


def test_an_unknown_field_is_named(tmp_path):
    message = refusal(tmp_path, GOOD.replace("batch_size = 500", "bach_size = 500"))

    assert message.endswith("[registry].bach_size: unknown field")


def test_a_bad_agency_effect_is_named_with_the_agency(tmp_path):
    message = refusal(tmp_path, GOOD.replace('"prioritize"', '"boost"'))

    assert message.endswith("[[agencies]] #2 (manpower).effect: must be 'exclude' or 'prioritize'")


def test_malformed_toml_is_refused(tmp_path):
    message = refusal(tmp_path, GOOD + "\n[notifier\n")

    assert "malformed TOML" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("batch_size = 500", "batch_size = 0"), "[registry].batch_size: must be a positive"),
        (("batch_size = 500", "batch_size = true"), "[registry].batch_size: must be a positive"),
        (
            ('base_url = "https://sms.example.id"', 'base_url = "ftp://sms.example.id"'),
            "[notifier].base_url: must be an http",
        ),
        (('id = "manpower"', 'id = "civil-service"'), "#2 (civil-service).id: duplicate id"),
        (('category = "LAID_OFF"', 'category = "laid off"'), "(manpower).category: must match"),
        (("[card_issuer]", "[card_issuerr]"), "[card_issuerr]: unknown section"),
    ],
)
def test_bad_values_are_refused_naming_the_field(tmp_path, change, expected):
    message = refusal(tmp_path, GOOD.replace(*change))

    assert expected in message


def test_a_missing_section_is_required(tmp_path):
    text = GOOD[: GOOD.index("[notifier]")]

    assert refusal(tmp_path, text).endswith("[notifier]: required")


def test_a_set_key_never_shows_in_reprs_errors_or_failures(tmp_path, requests_mock):
    config = load_partners_config(write(tmp_path, GOOD), env=ENV)

    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in repr(config.agencies[0])
    assert SECRET not in refusal(tmp_path, GOOD.replace("batch_size = 500", "batch_size = -1"))

    requests_mock.post("https://issuer.example.id/v1/credits", status_code=401)
    client = PartnerClient(config.card_issuer, sleep=lambda s: None)
    failure = client.post_items(
        "/v1/credits",
        "credits",
        [{"idempotency_key": "k1"}],
        key_field="idempotency_key",
        parse=lambda r: r,
    )["k1"]
    assert SECRET not in repr(failure)


def test_simulator_config_moves_every_partner_to_the_given_root():
    config: PartnersConfig = simulator_config("http://127.0.0.1:55123/")

    urls = [
        config.registry.base_url,
        *(a.base_url for a in config.agencies),
        *(p.base_url for p in config.payment_providers.values()),
        config.card_issuer.base_url,
        config.notifier.base_url,
    ]
    assert all(url.startswith("http://127.0.0.1:55123/") for url in urls)
    assert (
        config.payment_providers["wallet-b"].base_url == "http://127.0.0.1:55123/payment/wallet-b"
    )
    assert config.agencies[2].base_url == "http://127.0.0.1:55123/agency/education"


# ------------------------------------------------ issue 11: keys and clear text (interfaces.md)
@pytest.mark.parametrize(
    ("section", "where"),
    [
        ('[registry]\nbase_url = "https://registry.example.id/api/"\n', "[registry]"),
        (
            'id = "wallet-a"\nbase_url = "https://wallet-a.example.id"\n',
            "[[payment_providers]] #1 (wallet-a)",
        ),
        ('[notifier]\nbase_url = "https://sms.example.id"\n', "[notifier]"),
    ],
)
def test_a_section_without_api_key_env_is_refused_naming_it(tmp_path, section, where):
    # Before: such a section was accepted and its partner sent "Authorization: Bearer simulator".
    start = GOOD.index(section) + len(section)
    end = GOOD.index("\n", GOOD.index("api_key_env", start)) + 1
    text = GOOD[:start] + GOOD[start:end].split("api_key_env")[0] + GOOD[end:]
    assert text.count("api_key_env") == GOOD.count("api_key_env") - 1

    message = refusal(tmp_path, text)

    assert f"{where}.api_key_env: required" in message


@pytest.mark.parametrize(
    "url",
    ["http://issuer.example.id", "http://10.0.0.7:8700/issuer", "http://[fd00::2]/issuer"],
)
def test_clear_http_to_a_host_that_is_not_loopback_is_refused_naming_the_section(tmp_path, url):
    text = GOOD.replace('base_url = "https://issuer.example.id"', f'base_url = "{url}"')

    message = refusal(tmp_path, text)

    assert "[card_issuer].base_url: http:// to a host that is not loopback" in message
    assert "allow_insecure_http = true in [card_issuer]" in message


def test_clear_http_to_a_remote_host_is_accepted_where_the_section_allows_it(tmp_path):
    text = GOOD.replace(
        'base_url = "https://issuer.example.id"',
        'base_url = "http://issuer.example.id"\nallow_insecure_http = true',
    )
    config = load_partners_config(write(tmp_path, text), env=ENV)
    assert config.card_issuer.base_url == "http://issuer.example.id"

    # Only the section that says so: the others still need https.
    text = text.replace('"https://sms.example.id"', '"http://sms.example.id"')
    assert "[notifier].base_url: http:// to a host" in refusal(tmp_path, text)
    bad = GOOD.replace(
        'api_key_env = "PRAKERJA_ISSUER_API_KEY"',
        'api_key_env = "PRAKERJA_ISSUER_API_KEY"\nallow_insecure_http = "yes"',
    )
    assert refusal(tmp_path, bad).endswith(
        "[card_issuer].allow_insecure_http: must be true or false"
    )


@pytest.mark.parametrize("host", ["127.0.0.1:8700", "127.0.0.9", "localhost:9", "[::1]:8700"])
def test_clear_http_to_a_loopback_host_is_accepted(tmp_path, host):
    text = GOOD.replace('"https://issuer.example.id"', f'"http://{host}/issuer"')
    config = load_partners_config(write(tmp_path, text), env=ENV)
    assert config.card_issuer.base_url == f"http://{host}/issuer"


def test_a_copy_of_the_built_in_file_needs_its_keys_and_the_helper_names_them(tmp_path):
    from partners.config import BUILTIN_PATH, SIMULATOR_KEY_ENV, simulator_partners_text

    copy = write(tmp_path, BUILTIN_PATH.read_text())
    assert "[[agencies]] #1 (civil-service).api_key_env: required" in refusal(
        tmp_path, copy.read_text()
    )

    path = write(tmp_path, simulator_partners_text("http://127.0.0.1:55123/"))
    config = load_partners_config(path, env={SIMULATOR_KEY_ENV: SECRET})
    assert config.notifier.base_url == "http://127.0.0.1:55123/notify"
    assert {a.api_key for a in config.agencies} == {SECRET}
    assert config.registry.api_key == config.card_issuer.api_key == SECRET


# ------------------------------------------------ the file's pydantic model (issue 12)
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("retry_attempts = 4", "retry_attempts = 4.5"),
            "[registry].retry_attempts: must be a pos",
        ),
        (("retry_attempts = 4", "max_rps = nan"), "[registry].max_rps: must be a positive number"),
        (
            ("retry_attempts = 4", "retry_backoff_s = 9"),
            "[registry].retry_backoff_max_s: must be at least retry_backoff_s",
        ),
        (('id = "wallet-a"', 'id = "Wallet A"'), "[[payment_providers]] #1 (Wallet A).id: must be"),
        (('effect = "exclude"', "effect = 1"), "#1 (civil-service).effect: must be 'exclude' or"),
        (('id = "manpower"\n', ""), "[[agencies]] #2.id: required"),
        (("[registry]", "registry = 5\n[other]"), "[other]: unknown section"),
        (
            ('api_key_env = "PRAKERJA_NOTIFIER_API_KEY"', 'api_key_env = "2 words"'),
            "[notifier].api_key_env: must be an environment variable name",
        ),
    ],
)
def test_the_file_model_names_section_and_field(tmp_path, change, expected):
    assert expected in refusal(tmp_path, GOOD.replace(*change))


def test_a_section_of_the_wrong_shape_is_named(tmp_path):
    text = "notifier = 5\n" + GOOD[: GOOD.index("[notifier]")]
    assert refusal(tmp_path, text).endswith("[notifier]: must be a table")
    head, tail = GOOD.split("[[payment_providers]]")
    empty = "payment_providers = []\n" + head + tail[tail.index("[card_issuer]") :]
    assert refusal(tmp_path, empty).endswith("[[payment_providers]]: at least one is required")


def test_partner_defaults_are_the_runtime_settings_defaults(tmp_path):
    from partners.config import PartnerSettings, RetrySettings

    config = load_partners_config(write(tmp_path, GOOD), env=ENV)
    issuer = config.card_issuer
    assert (issuer.batch_size, issuer.max_rps, issuer.timeout_s) == (
        PartnerSettings.batch_size,
        PartnerSettings.max_rps,
        PartnerSettings.timeout_s,
    )
    assert issuer.retry == RetrySettings()


def test_the_built_in_file_states_only_what_the_defaults_do_not():
    """Each default lives once, in PartnerSettings/RetrySettings: the built-in file says who
    each partner is and where, and every partner it describes takes those defaults."""
    import tomllib
    from dataclasses import fields

    from partners.config import BUILTIN_PATH, PartnerSettings

    data = tomllib.loads(BUILTIN_PATH.read_text())
    sections = [data["registry"], *data["agencies"], *data["payment_providers"]]
    sections += [data["card_issuer"], data["notifier"], *data["training_platforms"]]
    assert {key for section in sections for key in section} == {
        "base_url",
        "id",
        "category",
        "effect",
    }

    defaults = PartnerSettings(id="", base_url="", api_key="")
    tuning = [
        f.name for f in fields(PartnerSettings) if f.name not in ("id", "base_url", "api_key")
    ]
    config = load_partners_config(BUILTIN_PATH, env={})
    assert len(config.every()) == len(sections)
    for partner in config.every():
        assert {n: getattr(partner, n) for n in tuning} == {
            n: getattr(defaults, n) for n in tuning
        }, partner.id


# ------------------------------------------------ training platforms (partner-api.md: the feed)
PLATFORMS = """
[[training_platforms]]
id = "marketplace-a"
base_url = "https://feed.marketplace-a.example.id/"
api_key_env = "PRAKERJA_MARKETPLACE_A_API_KEY"
batch_size = 500
max_rps = 5
max_concurrency = 2
timeout_s = 20
retry_attempts = 3

[[training_platforms]]
id = "marketplace-b"
base_url = "https://marketplace-b.example.id/feed"
api_key_env = "PRAKERJA_MARKETPLACE_B_API_KEY"
"""
PLATFORM_ENV = {
    **ENV,
    "PRAKERJA_MARKETPLACE_A_API_KEY": SECRET,
    "PRAKERJA_MARKETPLACE_B_API_KEY": SECRET,
}


def platform_refusal(tmp_path: Path, text: str) -> str:
    return refusal(tmp_path, text, env=PLATFORM_ENV)


def test_training_platforms_are_read_in_file_order_with_their_settings(tmp_path):
    config = load_partners_config(write(tmp_path, GOOD + PLATFORMS), env=PLATFORM_ENV)

    a, b = config.training_platforms
    assert (a.id, b.id) == ("marketplace-a", "marketplace-b")
    assert a.base_url == "https://feed.marketplace-a.example.id"
    assert (a.batch_size, a.max_rps, a.max_concurrency, a.timeout_s) == (500, 5.0, 2, 20.0)
    assert a.retry.attempts == 3 and a.api_key == SECRET
    assert b.base_url == "https://marketplace-b.example.id/feed"
    assert config.every()[-2:] == [a, b]


def test_a_file_without_training_platforms_has_none(tmp_path):
    config = load_partners_config(write(tmp_path, GOOD), env=ENV)
    assert config.training_platforms == ()
    # A configuration built without them (tests, benchmarks) has none either.
    built = PartnersConfig(
        registry=config.registry,
        agencies=config.agencies,
        payment_providers=config.payment_providers,
        card_issuer=config.card_issuer,
        notifier=config.notifier,
        source="built",
    )
    assert built.training_platforms == () and built.every() == config.every()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("max_concurrency = 2", "max_concurency = 2"),
            "[[training_platforms]] #1 (marketplace-a).max_concurency: unknown field",
        ),
        (
            ("max_rps = 5", "max_rps = 0"),
            "[[training_platforms]] #1 (marketplace-a).max_rps: must be a positive number",
        ),
        (
            ('"https://marketplace-b.example.id/feed"', '"http://marketplace-b.example.id/feed"'),
            "[[training_platforms]] #2 (marketplace-b).base_url: http:// to a host that is not "
            "loopback",
        ),
        (
            ('api_key_env = "PRAKERJA_MARKETPLACE_B_API_KEY"\n', ""),
            "[[training_platforms]] #2 (marketplace-b).api_key_env: required",
        ),
        (
            ('id = "marketplace-b"', 'id = "marketplace-a"'),
            "[[training_platforms]] #2 (marketplace-a).id: duplicate id",
        ),
        (
            ('id = "marketplace-b"', 'id = "wallet-a"'),
            "[[training_platforms]] #2 (wallet-a).id: duplicate id: another partner",
        ),
        (('id = "marketplace-b"\n', ""), "[[training_platforms]] #2.id: required"),
    ],
)
def test_a_bad_training_platform_is_refused_naming_it_and_the_field(tmp_path, change, expected):
    text = GOOD + PLATFORMS
    assert change[0] in text
    assert expected in platform_refusal(tmp_path, text.replace(*change))


def test_a_missing_platform_key_variable_is_refused(tmp_path):
    env = {k: v for k, v in PLATFORM_ENV.items() if k != "PRAKERJA_MARKETPLACE_A_API_KEY"}
    message = refusal(tmp_path, GOOD + PLATFORMS, env=env)
    assert message.endswith(
        "[[training_platforms]] #1 (marketplace-a).api_key_env: "
        "environment variable PRAKERJA_MARKETPLACE_A_API_KEY is not set"
    )


def test_training_platforms_as_a_single_table_is_refused(tmp_path):
    text = GOOD + '[training_platforms]\nid = "x"\nbase_url = "https://x.example.id"\n'
    assert platform_refusal(tmp_path, text).endswith(
        "[[training_platforms]]: must be an array of tables"
    )


def test_the_built_in_file_has_two_marketplaces_on_the_simulator():
    config = load_partners_config(env={})
    assert [(p.id, p.base_url) for p in config.training_platforms] == [
        ("marketplace-a", "http://127.0.0.1:8700/training/marketplace-a"),
        ("marketplace-b", "http://127.0.0.1:8700/training/marketplace-b"),
    ]


def test_simulator_config_and_text_move_the_training_platforms(tmp_path):
    from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text

    config = simulator_config("http://127.0.0.1:55123/")
    assert [p.base_url for p in config.training_platforms] == [
        "http://127.0.0.1:55123/training/marketplace-a",
        "http://127.0.0.1:55123/training/marketplace-b",
    ]

    path = write(tmp_path, simulator_partners_text("http://127.0.0.1:55124"))
    config = load_partners_config(path, env={SIMULATOR_KEY_ENV: SECRET})
    assert [p.base_url for p in config.training_platforms] == [
        "http://127.0.0.1:55124/training/marketplace-a",
        "http://127.0.0.1:55124/training/marketplace-b",
    ]
    assert {p.api_key for p in config.training_platforms} == {SECRET}
