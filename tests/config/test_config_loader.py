"""YAML loading: every fault named by file, line, field path and problem."""

import textwrap
from pathlib import Path

import pytest
import yaml

from sbc.config import (
    ConfigError,
    check_config_file,
    listen_specs,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "single-node.yaml"

HEAD = """\
listeners:
  - {name: lu, transport: udp, address: 127.0.0.1, port: 5060}
  - {name: lt, transport: tcp, address: 127.0.0.1, port: 5060}
"""


def problems(text):
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), source="test.yaml")
    return caught.value.problems


def marked_line(text):
    """The 1-based line carrying the `# <-` marker: where the fault is."""
    lines = textwrap.dedent(text).splitlines()
    return next(i for i, line in enumerate(lines, 1) if "# <-" in line)


def assert_single(text, path, fragment):
    found = problems(text)

    assert len(found) == 1, [str(p) for p in found]
    problem = found[0]
    line = marked_line(text)
    assert (problem.path, problem.line) == (path, line)
    assert fragment in problem.message
    assert str(problem).startswith(f"test.yaml:{line}: {path}: ")


FIELD_CASES = {
    "target_port_too_large": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets:
      - host: 192.0.2.1
        port: 99999  # <-
""",
        "trunks[0].targets[0].port",
        "less than or equal to 65535",
    ),
    "listener_port_negative": (
        """\
listeners:
  - name: l
    transport: udp
    address: 127.0.0.1
    port: -1  # <-
""",
        "listeners[0].port",
        "greater than or equal to 0",
    ),
    "transport_unknown": (
        """\
listeners:
  - name: l
    transport: sctp  # <-
    address: 127.0.0.1
""",
        "listeners[0].transport",
        "udp, tcp or tls",
    ),
    "address_not_ip": (
        """\
listeners:
  - name: l
    transport: udp
    address: localhost  # <-
""",
        "listeners[0].address",
        "not an IPv4 or IPv6 address",
    ),
    "address_scoped_ipv6": (
        """\
listeners:
  - name: l
    transport: udp
    address: "fe80::1%eth0"  # <-
""",
        "listeners[0].address",
        "scoped",
    ),
    "name_with_space": (
        """\
listeners:
  - name: bad name  # <-
    transport: udp
    address: ::1
""",
        "listeners[0].name",
        "a name is",
    ),
    "trunk_kind_unknown": (
        HEAD
        + """\
trunks:
  - name: t
    kind: isp  # <-
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
""",
        "trunks[0].kind",
        "'carrier', 'peer-sbc' or 'pbx'",
    ),
    "targets_missing": (
        HEAD
        + """\
trunks:
  - name: t  # <-
    kind: pbx
    listeners: [lu]
""",
        "trunks[0].targets",
        "required field missing",
    ),
    "targets_empty": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: []  # <-
""",
        "trunks[0].targets",
        "at least 1 item",
    ),
    "unknown_field_typo": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listner: lu  # <-
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
""",
        "trunks[0].listner",
        "did you mean 'listeners'",
    ),
    "acl_host_bits_set": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    inbound:
      allow:
        - 192.0.2.0/24
        - 10.0.0.1/8  # <-
""",
        "trunks[0].inbound.allow[1]",
        "host bits set",
    ),
    "target_host_malformed": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets:
      - host: "carrier..example.com"  # <-
""",
        "trunks[0].targets[0].host",
        "not an IP address or a DNS host name",
    ),
    "number_regex_invalid": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    numbers:
      outbound:
        - match: '(\\d+'  # <-
          replace: '\\1'
""",
        "trunks[0].numbers.outbound[0].match",
        "not a valid regular expression",
    ),
    "number_template_unknown_group": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    numbers:
      inbound:
        - match: '0(\\d+)'
          replace: '+44\\2'  # <-
""",
        "trunks[0].numbers.inbound[0].replace",
        "names group 2; the pattern has 1",
    ),
    "number_template_bad_escape": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    numbers:
      inbound:
        - match: '0(?P<rest>\\d+)'
          replace: '+44\\q'  # <-
""",
        "trunks[0].numbers.inbound[0].replace",
        "escapes are",
    ),
    "header_rule_protected": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    headers:
      egress:
        - {action: remove, name: v}  # <-
""",
        "trunks[0].headers.egress[0].name",
        "belongs to the B2BUA",
    ),
    "header_rule_remove_with_value": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    headers:
      ingress:
        - {action: remove, name: X-Foo, value: bar}  # <-
""",
        "trunks[0].headers.ingress[0]",
        "remove takes no value",
    ),
    "header_rule_replace_without_value": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    headers:
      ingress:
        - {action: replace, name: User-Agent}  # <-
""",
        "trunks[0].headers.ingress[0]",
        "replace needs a value",
    ),
    "header_rule_action_unknown": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    headers:
      ingress:
        - name: X-A
          action: rename  # <-
          value: b
""",
        "trunks[0].headers.ingress[0].action",
        "'add', 'remove' or 'replace'",
    ),
    "password_read_as_number": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    outbound_auth:
      username: acct
      password: 904211  # <-
""",
        "trunks[0].outbound_auth.password",
        "write it in quotes",
    ),
    "password_empty": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    outbound_auth:
      username: acct
      password: ""  # <-
""",
        "trunks[0].outbound_auth.password",
        "must not be empty",
    ),
    "password_is_redaction_mask": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    inbound:
      digest:
        username: acct
        password: "**********"  # <-
        realm: sbc.example.com
""",
        "trunks[0].inbound.digest.password",
        "redaction mask",
    ),
    "digest_algorithm_unknown": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    outbound_auth:
      username: acct
      password: s3cr3t-value
      algorithms: [SHA-256, SHA-1]  # <-
""",
        "trunks[0].outbound_auth.algorithms[1]",
        "'SHA-256' or 'MD5'",
    ),
    "failover_code_class_unknown": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    failover_codes:
      - 408
      - 7xx  # <-
""",
        "trunks[0].failover_codes[1]",
        "status 300-699 or a class",
    ),
    "failover_code_success_status": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    failover_codes: [200]  # <-
""",
        "trunks[0].failover_codes[0]",
        "status 300-699 or a class",
    ),
    "prefix_read_as_number": (
        HEAD
        + """\
trunks:
  - {name: t, kind: carrier, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - name: p
    routes:
      - prefix: +44  # <-
        candidates: [{trunk: t}]
""",
        "dial_plans[0].routes[0].prefix",
        "write it in quotes",
    ),
    "prefix_with_letters": (
        HEAD
        + """\
trunks:
  - {name: t, kind: carrier, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - name: p
    routes:
      - prefix: "+4x"  # <-
        candidates: [{trunk: t}]
""",
        "dial_plans[0].routes[0].prefix",
        "a prefix is",
    ),
    "route_without_candidates": (
        HEAD
        + """\
dial_plans:
  - name: p
    routes:
      - prefix: "1"
        candidates: []  # <-
""",
        "dial_plans[0].routes[0].candidates",
        "at least 1 item",
    ),
    "tls_listener_without_key": (
        """\
listeners:
  - name: l  # <-
    transport: tls
    address: 127.0.0.1
    tls_cert: cert.pem
""",
        "listeners[0]",
        "needs tls_cert and tls_key",
    ),
    "tls_files_on_udp_listener": (
        """\
listeners:
  - name: l  # <-
    transport: udp
    address: 127.0.0.1
    tls_cert: cert.pem
    tls_key: key.pem
""",
        "listeners[0]",
        "tls listeners only",
    ),
    "registration_aor_not_sip": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    registration:
      aor: "mailto:ops@example.com"  # <-
""",
        "trunks[0].registration.aor",
        "sip: or sips: URI",
    ),
    "registration_backoff_inverted": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    registration:
      aor: "sip:+15550100@carrier.example.com"
      retry:  # <-
        initial: 600
        maximum: 60
""",
        "trunks[0].registration.retry",
        "initial must not exceed maximum",
    ),
    "keepalive_interval_zero": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    keepalive:
      interval: 0  # <-
""",
        "trunks[0].keepalive.interval",
        "greater than or equal to 1",
    ),
    "limits_cps_zero": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    limits: {max_cps: 0}  # <-
""",
        "trunks[0].limits.max_cps",
        "greater than 0",
    ),
    "topology_allow_list_with_via": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    topology_hiding:
      allow_headers: [Allow, Via]  # <-
""",
        "trunks[0].topology_hiding.allow_headers",
        "cannot cross",
    ),
    "topology_allow_list_duplicate": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    topology_hiding:
      allow_headers: [Subject, s]  # <-
""",
        "trunks[0].topology_hiding.allow_headers",
        "listed twice",
    ),
    "version_unknown": (
        """\
version: 2  # <-
listeners: []
""",
        "version",
        "Input should be 1",
    ),
    "duplicate_key": (
        """\
listeners:
  - name: l
    transport: udp
    transport: tcp  # <-
    address: 127.0.0.1
""",
        "listeners[0].transport",
        "key given twice",
    ),
    "list_where_mapping_expected": (
        """\
listeners:
  - [udp, 127.0.0.1]  # <-
""",
        "listeners[0]",
        "valid dictionary",
    ),
}


@pytest.mark.parametrize("case", FIELD_CASES)
def test_field_error_names_path_and_line(case):
    text, path, fragment = FIELD_CASES[case]

    assert_single(text, path, fragment)


def test_field_errors_all_reported_in_one_pass():
    text = (
        HEAD
        + """\
trunks:
  - name: t
    kind: nope
    listeners: [lu]
    targets: [{host: 192.0.2.1, port: 0, weight: -1}]
"""
    )

    found = problems(text)

    assert {p.path for p in found} == {
        "trunks[0].kind",
        "trunks[0].targets[0].port",
        "trunks[0].targets[0].weight",
    }
    assert all(p.line is not None for p in found)


REFERENCE_CASES = {
    "duplicate_trunk_name": (
        HEAD
        + """\
trunks:
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.1}]}
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.2}]}  # <-
""",
        "trunks[1].name",
        "duplicate name 't' (first at trunks[0])",
    ),
    "duplicate_listener_name": (
        """\
listeners:
  - {name: l, transport: udp, address: 127.0.0.1, port: 5060}
  - {name: l, transport: udp, address: 127.0.0.1, port: 5062}  # <-
""",
        "listeners[1].name",
        "duplicate name 'l'",
    ),
    "trunk_unknown_listener": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners:
      - lu
      - nowhere  # <-
    targets: [{host: 192.0.2.1}]
""",
        "trunks[0].listeners[1]",
        "unknown listener 'nowhere'",
    ),
    "trunk_unknown_dial_plan": (
        HEAD
        + """\
trunks:
  - name: t
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    dial_plan: missing  # <-
""",
        "trunks[0].dial_plan",
        "unknown dial plan 'missing'",
    ),
    "route_unknown_trunk": (
        HEAD
        + """\
trunks:
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - name: p
    routes:
      - prefix: "+1"
        candidates:
          - trunk: t
          - trunk: ghost  # <-
""",
        "dial_plans[0].routes[0].candidates[1].trunk",
        "unknown trunk 'ghost'",
    ),
    "route_same_trunk_twice": (
        HEAD
        + """\
trunks:
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - name: p
    routes:
      - prefix: "+1"
        candidates:
          - trunk: t
          - trunk: t  # <-
""",
        "dial_plans[0].routes[0].candidates[1].trunk",
        "candidate twice",
    ),
    "duplicate_prefix": (
        HEAD
        + """\
trunks:
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - name: p
    routes:
      - {prefix: "+1", candidates: [{trunk: t}]}
      - {prefix: "+1", candidates: [{trunk: t}]}  # <-
""",
        "dial_plans[0].routes[1].prefix",
        "already routed by routes[0]",
    ),
    "listeners_same_socket": (
        """\
listeners:
  - {name: a, transport: udp, address: 127.0.0.1, port: 5060}
  - {name: b, transport: udp, address: 127.0.0.1, port: 5060}  # <-
""",
        "listeners[1].port",
        "already bound by listeners[0] (a)",
    ),
    "listeners_tls_and_tcp_same_port": (
        """\
listeners:
  - {name: a, transport: tcp, address: "::1", port: 5061}
  - {name: b, transport: tls, address: "::1", port: 5061, tls_cert: c, tls_key: k}  # <-
""",
        "listeners[1].port",
        "already bound",
    ),
    "listener_wildcard_overlaps": (
        """\
listeners:
  - {name: a, transport: udp, address: 0.0.0.0, port: 5060}
  - {name: b, transport: udp, address: 192.0.2.5, port: 5060}  # <-
""",
        "listeners[1].port",
        "already bound",
    ),
    "target_transport_without_listener": (
        HEAD
        + """\
trunks:
  - name: t
    kind: carrier
    listeners: [lu]
    targets:
      - host: 192.0.2.1
        transport: tls  # <-
""",
        "trunks[0].targets[0].transport",
        "no tls listener among the trunk's listeners",
    ),
    "trunk_two_listeners_one_transport": (
        """\
listeners:
  - {name: a, transport: udp, address: 127.0.0.1, port: 5060}
  - {name: b, transport: udp, address: 127.0.0.1, port: 5062}
trunks:
  - name: t
    kind: pbx
    listeners: [a, b]  # <-
    targets: [{host: 192.0.2.1}]
""",
        "trunks[0].listeners",
        "two udp listeners",
    ),
    "acl_ambiguous_on_listener": (
        HEAD
        + """\
trunks:
  - name: one
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    inbound: {allow: [192.0.2.0/24]}
  - name: two
    kind: carrier
    listeners: [lu]
    targets: [{host: 192.0.2.2}]
    inbound:
      allow:
        - 192.0.2.0/24  # <-
""",
        "trunks[1].inbound.allow[0]",
        "already identifies trunk 'one'",
    ),
    "digest_only_realms_differ": (
        HEAD
        + """\
trunks:
  - name: one
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    inbound:
      digest: {username: a, password: pw-one, realm: r1}
  - name: two
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.2}]
    inbound:
      digest:
        username: b
        password: pw-two
        realm: r2  # <-
""",
        "trunks[1].inbound.digest.realm",
        "already challenges with realm 'r1'",
    ),
    "digest_only_same_username": (
        HEAD
        + """\
trunks:
  - name: one
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.1}]
    inbound:
      digest: {username: a, password: pw-one, realm: r}
  - name: two
    kind: pbx
    listeners: [lu]
    targets: [{host: 192.0.2.2}]
    inbound:
      digest:
        username: a  # <-
        password: pw-two
        realm: r
""",
        "trunks[1].inbound.digest.username",
        "already identifies trunk 'one'",
    ),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_reference_error_names_path_and_line(case):
    text, path, fragment = REFERENCE_CASES[case]

    assert_single(text, path, fragment)


def test_listeners_distinct_sockets_accepted():
    text = """\
listeners:
  - {name: a, transport: udp, address: 127.0.0.1, port: 5060}
  - {name: b, transport: tcp, address: 127.0.0.1, port: 5060}
  - {name: c, transport: udp, address: "::", port: 5060}
  - {name: d, transport: udp, address: 127.0.0.2, port: 5060}
  - {name: e, transport: udp, address: 127.0.0.1, port: 0}
  - {name: f, transport: udp, address: 127.0.0.1, port: 0}
"""

    config = parse_config(text)

    assert [listener.name for listener in config.listeners] == list("abcdef")


def test_reference_errors_all_reported_in_one_pass():
    text = (
        HEAD
        + """\
trunks:
  - {name: t, kind: pbx, listeners: [lx], targets: [{host: 192.0.2.1}], dial_plan: q}
  - {name: t, kind: pbx, listeners: [lu], targets: [{host: 192.0.2.1}]}
dial_plans:
  - {name: p, routes: [{prefix: "", candidates: [{trunk: u}]}]}
"""
    )

    found = problems(text)

    assert sorted(p.path for p in found) == [
        "dial_plans[0].routes[0].candidates[0].trunk",
        "trunks[0].dial_plan",
        "trunks[0].listeners[0]",
        "trunks[1].name",
    ]


def test_listener_port_defaults_by_transport():
    text = """\
listeners:
  - {name: u, transport: udp, address: 127.0.0.1}
  - {name: s, transport: TLS, address: "[::1]", tls_cert: c.pem, tls_key: k.pem}
"""

    config = parse_config(text)

    assert [
        (lst.transport, str(lst.address), lst.port) for lst in config.listeners
    ] == [
        ("udp", "127.0.0.1", 5060),
        ("tls", "::1", 5061),
    ]


def test_yaml_syntax_error_names_line():
    text = "listeners:\n  - name: a\n    transport: [udp\n    address: 127.0.0.1\n"

    found = problems(text)

    assert len(found) == 1
    assert found[0].line is not None and found[0].line >= 3
    assert found[0].message.startswith("YAML syntax:")


def test_empty_file_rejected():
    assert problems("# nothing but a comment\n")[0].message == "the file is empty"


def test_top_level_list_rejected():
    found = problems("- listeners\n")

    assert (found[0].line, found[0].path) == (1, "")
    assert "top level must be a mapping" in found[0].message


def test_load_config_missing_file_names_it(tmp_path):
    missing = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert str(missing) in str(caught.value)


def test_load_config_tls_files_resolved_against_config_dir(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "sbc.pem").write_text("cert")
    (tmp_path / "certs" / "sbc.key").write_text("key")
    path = tmp_path / "sbc.yaml"
    path.write_text(
        "listeners:\n"
        "  - name: s\n    transport: tls\n    address: 127.0.0.1\n"
        "    tls_cert: certs/sbc.pem\n    tls_key: certs/sbc.key\n"
    )

    config = load_config(path)

    assert config.listeners[0].tls_cert == tmp_path / "certs" / "sbc.pem"
    assert config.listeners[0].tls_key == tmp_path / "certs" / "sbc.key"


def test_load_config_tls_file_missing_names_line(tmp_path):
    (tmp_path / "sbc.pem").write_text("cert")
    path = tmp_path / "sbc.yaml"
    path.write_text(
        "listeners:\n"
        "  - name: s\n    transport: tls\n    address: 127.0.0.1\n"
        "    tls_cert: sbc.pem\n    tls_key: gone.key\n"
    )

    lines = check_config_file(path)

    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:6: listeners[0].tls_key: cannot read ")
    assert "gone.key" in lines[0]


def test_check_config_file_lists_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners:\n"
        "  - {name: a, transport: udp, address: 127.0.0.1, port: 70000}\n"
        "  - {name: b, transport: carrier-pigeon, address: 127.0.0.1}\n"
    )

    lines = check_config_file(path)

    assert lines == [
        f"{path}:2: listeners[0].port: Input should be less than or equal to 65535",
        f"{path}:3: listeners[1].transport: transport must be udp, tcp or tls",
    ]


def test_example_single_node_loads_as_documented():
    config = load_config(EXAMPLE)
    # An independent reading of the same file: plain YAML, no model.
    raw = yaml.safe_load(EXAMPLE.read_text())

    assert check_config_file(EXAMPLE) == []
    assert [
        (spec.transport, spec.host, spec.port) for spec in listen_specs(config)
    ] == [
        (item["transport"].upper(), item["address"], item["port"])
        for item in raw["listeners"]
    ]
    assert {(s.transport, s.port) for s in listen_specs(config)} == {
        ("UDP", 5060),
        ("TCP", 5060),
        ("UDP", 5062),
    }
    pbx, carrier = config.trunk("pbx"), config.trunk("carrier")
    assert [(t.host, t.port, t.transport) for t in pbx.targets] == [
        ("127.0.0.1", 5070, "udp")
    ]
    assert [(t.host, t.port, t.transport) for t in carrier.targets] == [
        ("127.0.0.1", 5080, "udp")
    ]
