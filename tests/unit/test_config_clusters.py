"""Configuration of emulated CloudHSM clusters (``[[clusters]]``) and custom key stores
(``[custom_key_stores]``): what is read, from where, and what is refused."""

from __future__ import annotations

import pytest

from keyplane import config
from keyplane.errors import ValidationError

ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def load(tmp_path, text: str) -> config.Config:
    path = tmp_path / "keyplane.toml"
    path.write_text(text)
    return config.load(path, environ={})


def test_defaults_have_no_clusters_and_aws_quota():
    c = config.load(None, environ={})
    assert c.clusters == ()
    assert c.custom_key_store_quota == 1800.0
    assert c.custom_key_store_connect_seconds == 0.5


def test_a_cluster_with_every_setting(tmp_path):
    (tmp_path / "customerCA.crt").write_text(ANCHOR)
    c = load(
        tmp_path,
        "[custom_key_stores]\nrequest_quota = 50\nconnect_seconds = 0\n"
        '[[clusters]]\nid = "cluster-234abcdefgh"\n'
        'trust_anchor_file = "customerCA.crt"\nkmsuser_password = "kmsuser-pw"\n'
        'hsm_count = 3\naccount = "444455556666"\nextra_latency_ms = 2.5\n'
        "capacity_per_second = 1000\n"
        '[[clusters]]\nid = "cluster-345bcdefghi"\n'
        f"trust_anchor_certificate = '''{ANCHOR}'''\n"
        'backup_of = "cluster-234abcdefgh"\n',
    )
    assert (c.custom_key_store_quota, c.custom_key_store_connect_seconds) == (50, 0)
    first, second = c.clusters
    assert first == config.ClusterConfig(
        id="cluster-234abcdefgh",
        trust_anchor=ANCHOR,
        account="444455556666",
        hsm_count=3,
        kmsuser_password="kmsuser-pw",
        extra_latency_ms=2.5,
        capacity_per_second=1000.0,
    )
    assert "kmsuser-pw" not in repr(first)
    assert second.trust_anchor == ANCHOR
    assert (second.backup_of, second.kmsuser_password, second.hsm_count) == (
        "cluster-234abcdefgh",
        None,
        2,
    )


@pytest.mark.parametrize(
    "table",
    [
        'id = "cluster-short"\ntrust_anchor_certificate = "x"',
        'id = "cluster-1abcdefghij"\ntrust_anchor_certificate = "x"',
        'id = "cluster-234abcdefgh"',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\n'
        'trust_anchor_file = "y"',
        'id = "cluster-234abcdefgh"\ntrust_anchor_file = "missing.crt"',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "  "',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\n'
        'kmsuser_password = "short"',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\nhsm_count = 29',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\nhsm_count = 2.5',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\n'
        "extra_latency_ms = -1",
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\naccount = "12"',
        'id = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\nsubnets = 2',
    ],
)
def test_a_bad_cluster_is_refused(tmp_path, table):
    with pytest.raises(ValidationError):
        load(tmp_path, f"[[clusters]]\n{table}\n")


def test_a_cluster_declared_twice_is_refused(tmp_path):
    table = '[[clusters]]\nid = "cluster-234abcdefgh"\ntrust_anchor_certificate = "x"\n'
    with pytest.raises(ValidationError, match="declared twice"):
        load(tmp_path, table * 2)


@pytest.mark.parametrize(
    "section",
    [
        "[custom_key_stores]\nrequest_quota = -1\n",
        "[custom_key_stores]\nconnect_seconds = 4000\n",
        '[custom_key_stores]\nrequest_quota = "many"\n',
    ],
)
def test_bad_key_store_settings_are_refused(tmp_path, section):
    with pytest.raises(ValidationError):
        load(tmp_path, section)
