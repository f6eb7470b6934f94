"""DICOM TLS with DCMTK's echoscu/storescu (+tls), a throwaway CA made with the openssl CLI;
AE titles pinned to hosts."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from peers import dcmtk_env, echoscu, require, store_responses

pytestmark = pytest.mark.network


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require("openssl"), *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem, and node/tps1 key + certificate signed by it (two days, RSA 2048)."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=rtnode test CA", cwd=d)
    for name in ("node", "tps1"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext", cwd=d)
    return d


def dcmtk(tool: str, port: int, pki: Path, tls: list[str], files=(), calling: str = "TPS1"):
    cmd = [require(tool), "-v", "-aet", calling, "-aec", "RTNODE", *tls,
           "+cf", str(pki / "ca.pem"), "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, env=dcmtk_env())


@pytest.fixture
def tls_node(node_factory, pki):
    return node_factory(dicom={"tls": {
        "enabled": True, "certificate": str(pki / "node.pem"),
        "private_key": str(pki / "node.key"), "ca_certificates": str(pki / "ca.pem"),
        "require_client_certificate": True}})


def test_tls_echo_and_store_with_dcmtk_and_a_client_without_certificate_refused(
        tls_node, pki, course_100):
    client = ["+tls", str(pki / "tps1.key"), str(pki / "tps1.pem")]
    # silent clients that never start their handshake must not hold the accept loop
    silent = [socket.create_connection(("127.0.0.1", tls_node.port)) for _ in range(10)]
    r = dcmtk("echoscu", tls_node.port, pki, client)
    assert r.returncode == 0 and "Received Echo Response (Success)" in r.stdout, r.stdout
    for s in silent:
        s.close()
    r = dcmtk("storescu", tls_node.port, pki, client, course_100["CT"][:3])
    assert store_responses(r.stdout) == ["Success"] * 3, r.stdout
    assert "with TLS (client certificate required)" in tls_node.log

    anonymous = dcmtk("echoscu", tls_node.port, pki, ["+tla"])
    assert anonymous.returncode != 0
    assert "Received Echo Response" not in anonymous.stdout
    plain = echoscu(tls_node.port, calling="TPS1", timeout=60)
    assert plain.returncode != 0
    assert "TLS handshake failed" in tls_node.log
    # the node serves on
    r = dcmtk("echoscu", tls_node.port, pki, client)
    assert r.returncode == 0, r.stdout
    assert tls_node.cli_json("status")["counts"]["instances"] == 3


def test_outgoing_associations_use_tls(tls_node, course_100):
    """rtnode's own SCUs (echo, send) call the TLS node with the configured certificate."""
    r = tls_node.cli("echo", f"RTNODE@127.0.0.1:{tls_node.port}")
    assert r.returncode == 0, r.stderr
    from rtnode.config import load_config
    from rtnode.dicom import tls
    from rtnode.dicom.scu import Peer
    from rtnode.dicom.send import send_files

    tls.configure(load_config(tls_node.config, environ={}))
    try:
        report = send_files(course_100["RTPLAN"], Peer("RTNODE", "127.0.0.1", tls_node.port),
                            calling_ae="SENDER", retries=0)
    finally:
        tls.configure(load_config(None, environ={}, search=False))
    assert report.ok, report.reason
    assert tls_node.cli_json("status")["counts"]["instances"] == 1


def test_ae_title_pinned_to_host(node_factory, course_100):
    node = node_factory(dicom={"caller_hosts": {"TPS1": ["10.255.0.9"],
                                                "TPS2": ["localhost"]}})
    refused = echoscu(node.port, calling="TPS1")
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout
    assert "calling AE TPS1 may only call from 10.255.0.9" in node.log
    assert echoscu(node.port, calling="TPS2").returncode == 0  # localhost is 127.0.0.1
    assert echoscu(node.port, calling="OTHER").returncode == 0  # not pinned
    assert node.cli_json("status")["events"]["association_rejected"] == 1
