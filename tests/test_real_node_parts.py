"""The pure parts of the harness's real nodes: image layers and archives, apt's answers,
the pod network's and the kubelet's configuration. No containerd, kubelet or network."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from controlplane import debs
from controlplane.containerd import Containerd
from controlplane.kubelet import Kubelet, NodeTaint, RealNode
from controlplane.oci import FIXED_MTIME, Layer, image_config, write_archive
from controlplane.podnetwork import PodNetwork, instance_id
from controlplane.realnodes import REAL_NODES, SPOT_TAINT


def _layer() -> Layer:
    layer = Layer()
    layer.add_file("usr/bin/tool", b"#!/bin/sh\n", 0o755)
    layer.add_symlink("bin/sh", "dash")
    layer.add_dir("tmp", 0o1777)
    return layer


def test_layers_are_reproducible_sorted_and_owned_by_root() -> None:
    first, second = _layer().tar(), _layer().tar()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"usr", "usr/bin", "bin"} <= set(names)  # parents are added
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, FIXED_MTIME)}
    modes = {m.name: m.mode for m in members}
    assert (modes["tmp"], modes["usr/bin/tool"]) == (0o1777, 0o755)


def test_hard_links_of_a_package_become_copies() -> None:
    layer = Layer()
    source = tarfile.TarInfo("./usr/bin/python3.11")
    source.size = 3
    layer.add_member(source, b"elf")
    link = tarfile.TarInfo("./usr/bin/python3.11-copy")
    link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/python3.11"
    layer.add_member(link, None)
    with tarfile.open(fileobj=io.BytesIO(layer.tar())) as archive:
        copy = archive.extractfile("usr/bin/python3.11-copy")
        assert copy is not None and copy.read() == b"elf"


def test_archive_names_the_image_and_its_blobs_match_their_digests(tmp_path: Path) -> None:
    layer = _layer().tar()
    config = image_config([layer], entrypoint=["/pause"])
    path = tmp_path / "image.tar"
    digest = write_archive(path, "localhost/spotguard/pause:1", [layer], config)
    first = path.read_bytes()
    assert write_archive(path, "localhost/spotguard/pause:1", [layer], config) == digest
    assert path.read_bytes() == first
    with tarfile.open(path) as archive:
        files = {m.name: f.read() for m in archive.getmembers() if (f := archive.extractfile(m))}
    index = json.loads(files["index.json"])
    (manifest_ref,) = index["manifests"]
    assert manifest_ref["annotations"]["io.containerd.image.name"] == "localhost/spotguard/pause:1"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files[f"blobs/sha256/{manifest_ref['digest'][7:]}"])
    layer_digest = manifest["layers"][0]["digest"]
    assert json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"]) == config
    assert config["rootfs"]["diff_ids"] == [layer_digest]  # uncompressed: diff id = digest


def test_apt_print_uris_lines_and_epochs() -> None:
    line = (
        "'http://mirror/pool/main/z/zlib/zlib1g_1%3a1.2.13.dfsg-1_amd64.deb' "
        "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb 86880 SHA256:" + "ab" * 32
    )
    match = debs._PRINT_URIS.match(line)
    assert match is not None
    deb = debs.Deb("zlib1g", match[1], int(match[2]), match[3])
    assert (deb.version, deb.size) == ("1:1.2.13.dfsg-1", 86880)


def test_pod_network_stays_on_its_own_bridge(tmp_path: Path) -> None:
    network = PodNetwork(tmp_path, instance_id(tmp_path / "a-very-long-work-directory"), 3)
    assert len(network.bridge) <= 15
    assert network.bridge != PodNetwork(tmp_path, instance_id(tmp_path / "other"), 3).bridge
    network.write()
    (conflist,) = network.conf_dir.iterdir()
    (bridge,) = json.loads(conflist.read_text())["plugins"]
    assert (bridge["isGateway"], bridge["ipMasq"]) == (False, False)
    assert "routes" not in bridge["ipam"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.3.0/24"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_kubelet_configuration_for_these_machines(tmp_path: Path) -> None:
    node = RealNode("n1", "g", True, {"a": "b"}, (NodeTaint("spot", "true", "NoSchedule"),))
    containerd = Containerd(tmp_path / "c", PodNetwork(tmp_path, "abc", 1), "pause:1")
    kubelet = Kubelet(
        node, tmp_path / "k", containerd, "https://127.0.0.1:1", tmp_path / "ca.crt",
        tmp_path / "ca.key", "abc", 10250, 10248,
    )  # fmt: skip
    config = kubelet.config()
    assert config["address"] == config["healthzBindAddress"] == "127.0.0.1"
    assert (config["readOnlyPort"], config["resolvConf"], config["oomScoreAdj"]) == (0, "", 0)
    assert (config["failCgroupV1"], config["failSwapOn"], config["cgroupDriver"]) == (
        False,
        False,
        "cgroupfs",
    )
    assert config["cgroupRoot"] == "/spotguard-abc-n1"
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'c' / 'containerd.sock'}"
    assert config["registerWithTaints"] == [
        {"key": "spot", "value": "true", "effect": "NoSchedule"}
    ]
    assert "restrict_oom_score_adj = true" in containerd.config()


def test_real_node_groups() -> None:
    spot = [n for n in REAL_NODES if n.spot]
    assert len(spot) == 2 and all(n.taints == (SPOT_TAINT,) for n in spot)
    assert [n.taints for n in REAL_NODES if not n.spot] == [()]
