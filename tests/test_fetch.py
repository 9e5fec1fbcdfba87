"""The fetchers of the real data, through their own code, from a loopback HTTP server
(127.0.0.1 only): hash checks, a download resumed after a cut connection, a clear error
without network, and what they fetch read by the project's own readers."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emolib.datasets import (
    FetchError,
    fetch_bold5000_release,
    fetch_ds000113,
    fetch_emotion_annotations,
    fetch_files,
    obtain_dataset,
    resolve_annotations_dir,
)
from emolib.datasets.fetch import ANNOTATION_FILES
from emolib.manifest import sha256_file
from emolib.paths import SHARED_ANNOTATIONS_DIR


class Server:
    """Files of a folder over HTTP on 127.0.0.1, with ``Range`` support; ``cut[name] = n``
    closes the connection after ``n`` bytes of the next response for that file;
    ``mode = "ignore-range"`` answers every request with the whole file (200),
    ``mode = "bad-range"`` resumes one byte early (a 206 that does not fit)."""

    def __init__(self, root: Path):
        self.root, self.cut, self.ranges, self.mode = Path(root), {}, [], ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = self.path.split("?")[0].lstrip("/")
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                header = self.headers.get("Range")
                server.ranges.append((name, header))
                if header and server.mode != "ignore-range":
                    start = int(header.split("=")[1].split("-")[0])
                    start -= server.mode == "bad-range"
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/"
                                                      f"{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.cut.pop(name, None)
                self.wfile.write(body if n is None else body[:n])
                if n is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_files_are_hash_checked_cached_and_resumed_after_a_cut(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (site / "b.txt").write_text("second file\n")
    files = {"a.bin": sha256_file(site / "a.bin"), "sub/b.txt": sha256_file(site / "b.txt")}
    (site / "sub").mkdir()
    shutil.copy(site / "b.txt", site / "sub" / "b.txt")
    dest = tmp_path / "dest"
    with Server(site) as srv:
        spec = {n: (srv.url + n, h) for n, h in files.items()}
        # the connection is cut after 300 kB: an error that says so, the part kept
        srv.cut["a.bin"] = 300_000
        with pytest.raises(FetchError, match="a.bin.*(cut|broke off)"):
            fetch_files(spec, dest, progress=False)
        assert not (dest / "a.bin").exists()
        have = (dest / ".a.bin.part").stat().st_size  # what arrived, in whole blocks
        assert 0 < have <= 300_000
        # the next call asks only for the rest, and the hash of the whole file matches
        got = fetch_files(spec, dest, progress=False)
        assert ("a.bin", f"bytes={have}-") in srv.ranges
        assert [p.name for p in got] == ["a.bin", "b.txt"]
        assert sha256_file(got[0]) == files["a.bin"] and not (dest / ".a.bin.part").exists()
        # cached: nothing is requested again
        n = len(srv.ranges)
        fetch_files(spec, dest, progress=False)
        assert len(srv.ranges) == n
        # a wrong hash: an error naming the file, nothing left behind
        with pytest.raises(FetchError, match="b.txt.*hash"):
            fetch_files({"c.txt": (srv.url + "b.txt", "0" * 64)}, dest, progress=False)
        assert not (dest / "c.txt").exists()
        with pytest.raises(FetchError, match="HTTP 404"):
            fetch_files({"x": (srv.url + "missing", None)}, dest, progress=False)
        # a server that ignores the range: the download starts over, and is right
        (dest / "a.bin").unlink()
        srv.cut["a.bin"] = 200_000
        with pytest.raises(FetchError):
            fetch_files(spec, dest, progress=False)
        srv.mode = "ignore-range"
        assert sha256_file(fetch_files(spec, dest, progress=False)[0]) == files["a.bin"]
        # one that resumes at another byte: the kept part is dropped, the next call is right
        (dest / "a.bin").unlink()
        srv.mode, srv.cut["a.bin"] = "", 200_000
        with pytest.raises(FetchError):
            fetch_files(spec, dest, progress=False)
        srv.mode = "bad-range"
        with pytest.raises(FetchError, match="another byte"):
            fetch_files(spec, dest, progress=False)
        assert not (dest / ".a.bin.part").exists()
        srv.mode = ""
        assert sha256_file(fetch_files(spec, dest, progress=False)[0]) == files["a.bin"]


def test_no_network_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=rf"could not reach http://127.0.0.1:{port}/.*network"):
        fetch_emotion_annotations(tmp_path, url=f"http://127.0.0.1:{port}/", progress=False)


@pytest.mark.skipif(not SHARED_ANNOTATIONS_DIR.is_dir(), reason="the real annotations are "
                    "not beside the repository")
def test_annotations_fetched_are_the_real_files_and_found_by_default(tmp_path, monkeypatch):
    with Server(SHARED_ANNOTATIONS_DIR) as srv:
        folder = fetch_emotion_annotations(tmp_path, url=srv.url, progress=False)
    assert sorted(p.name for p in folder.glob("*.csv")) == sorted(ANNOTATION_FILES)
    assert all(sha256_file(folder / n) == h for n, h in ANNOTATION_FILES.items())
    # without ../shared, the fetched copy is what the chapters use by default
    monkeypatch.setattr("emolib.datasets.forrest.SHARED_ANNOTATIONS_DIR", tmp_path / "none")
    assert resolve_annotations_dir(None, tmp_path) == folder


def test_ds000113_runs_are_fetched_into_a_tree_the_pipeline_reads(tiny_dataset, tmp_path):
    from emolib.io.bids import scan_runs

    with Server(tiny_dataset / "ds000113") as srv:
        root = fetch_ds000113(["01", "02"], [1, 3], tmp_path, url=srv.url, progress=False)
    assert (root / "task-movie_bold.json").is_file()
    runs = scan_runs(root, runs=[1, 3])
    assert sorted(zip(runs.runs["subject"], runs.runs["run"], strict=True)) == [
        ("01", 1), ("01", 3), ("02", 1), ("02", 3)]
    for path in runs.runs["path"]:
        assert sha256_file(path) == sha256_file(tiny_dataset / "ds000113" / path.relative_to(root))
    # the chapters find it there without a bids_dir
    src = obtain_dataset("bids", "t", data_dir=tmp_path, annotations_dir=tiny_dataset /
                         "annotations")
    assert src.bids_dir == root
    with pytest.raises(ValueError, match="no movie session"):
        fetch_ds000113(["07"], data_dir=tmp_path, url=srv.url)
    with pytest.raises(ValueError, match="runs 1-8"):
        fetch_ds000113(["01"], [9], data_dir=tmp_path, url=srv.url)


def test_bold5000_release_zips_are_fetched_and_extracted_into_the_release_layout(tmp_path):
    from emolib.io import load_roi_rdms
    from emolib.synthetic import generate_bold5000_release
    from tests.test_bold5000_release import dog_rdms

    root = generate_bold5000_release(tmp_path / "gen", layer_rdms=dog_rdms, n_images=20,
                                     seed=1, progress=False)
    site = tmp_path / "site"
    site.mkdir()
    for member, name in (("ROIs", "rois.zip"), ("BOLD5000_Stimuli", "stim.zip")):
        with zipfile.ZipFile(site / name, "w") as zf:
            for p in sorted((root / member).rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(root).as_posix())
    md5 = hashlib.md5((site / "rois.zip").read_bytes()).hexdigest()
    with Server(site) as srv:
        rois = {"url": srv.url + "rois.zip", "name": "rois.zip", "md5": md5,
                "size": (site / "rois.zip").stat().st_size}
        stim = {"url": srv.url + "stim.zip", "name": "stim.zip", "md5": None, "size": None}
        got = fetch_bold5000_release(tmp_path / "data", rois=rois, stimuli=stim,
                                     progress=False)
        ours = load_roi_rdms(got, ["CSI1", "CSI2"], "TR34", "average", progress=False)
        theirs = load_roi_rdms(root, ["CSI1", "CSI2"], "TR34", "average", progress=False)
        for s in ours:
            assert (ours[s].dissimilarities == theirs[s].dissimilarities).all()
        assert sorted(p.name for p in (got / "BOLD5000_Stimuli").rglob("*.jpg")) == sorted(
            p.name for p in (root / "BOLD5000_Stimuli").rglob("*.jpg"))
        # a recorded size or md5 that does not match the download is reported as such
        bad = {**rois, "name": "rois2.zip", "size": rois["size"] + 1}
        with pytest.raises(FetchError, match="bytes.*recorded"):
            fetch_bold5000_release(tmp_path / "data2", rois=bad, stimuli=None, progress=False)
        bad = {**rois, "name": "rois3.zip", "md5": "0" * 32}
        with pytest.raises(FetchError, match="MD5 .* recorded.*kept"):
            fetch_bold5000_release(tmp_path / "data3", rois=bad, stimuli=None, progress=False)
        # kept, not deleted: accepting it costs no new download
        n = len(srv.ranges)
        fetch_bold5000_release(tmp_path / "data3", rois={**bad, "md5": None}, stimuli=None,
                               progress=False)
        assert len(srv.ranges) == n
