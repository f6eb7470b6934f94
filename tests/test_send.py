"""Send-back engine against a real Orthanc: an RTSTRUCT arrives; a peer that is down gets its
retries, each recorded, then a failure result."""

from __future__ import annotations

import pytest

from orthanc import OrthancProcess
from peers import free_port
from rtnode.dicom.scu import Peer
from rtnode.dicom.send import SendError, send_files
from rtnode.phantom import CTGeometry, EllipticBody, Patient, Sphere
from rtnode.phantom.ct import make_ct_series, water_phantom_hu
from rtnode.phantom.masks import shape_masks
from rtnode.rtstruct import save_rtstruct, write_rtstruct

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("send")
    body = EllipticBody(semi_x=40.0, semi_y=30.0)
    sphere = Sphere("Sphere", center=(0.0, 0.0, 0.0), radius=12.0)
    ct = make_ct_series(Patient(patient_id="SEND01"),
                        CTGeometry(rows=48, columns=48, pixel_spacing=(2.0, 2.0), slices=12,
                                   slice_spacing=2.5),
                        water_phantom_hu(body, [(sphere, 50.0)]))
    ct_paths = []
    for i, ds in enumerate(ct):
        path = folder / f"CT{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ct_paths.append(path)
    rs = write_rtstruct(ct, shape_masks(ct, [sphere, body]), model="builtin:test")
    return {"ct": ct_paths, "rtstruct": save_rtstruct(rs, folder / "rtstruct.dcm"),
            "rtstruct_uid": rs.SOPInstanceUID}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with OrthancProcess(tmp_path_factory.mktemp("orthanc")) as orthanc:
        yield orthanc


def test_rtstruct_arrives_in_orthanc(pacs, files):
    report = send_files([files["rtstruct"]], pacs.peer, calling_ae="RTNODE", retries=2,
                        backoff=0.1)
    assert report.ok, report.reason
    assert len(report.attempts) == 1
    assert report.attempts[0].status == 0x0000
    assert report.attempts[0].files[0].status == 0x0000
    assert files["rtstruct_uid"] in pacs.sop_instance_uids()
    stored = [i for i in pacs.instances()
              if pacs.instance_tags(i)["SOPInstanceUID"] == files["rtstruct_uid"]]
    assert pacs.instance_tags(stored[0])["Modality"] == "RTSTRUCT"
    assert report.raise_for_status() is report


def test_a_series_arrives_over_one_association(pacs, files):
    report = send_files(files["ct"], pacs.peer, retries=0)
    assert report.ok and report.attempts[0].stored == len(files["ct"])
    assert len(pacs.get("/series")) >= 1


def test_peer_down_is_retried_then_fails(files):
    waits: list[float] = []
    peer = Peer("NOBODY", "127.0.0.1", free_port())  # nothing listens there
    report = send_files([files["rtstruct"]], peer, retries=3, backoff=0.5, timeout=5,
                        sleep=waits.append)
    assert not report.ok and not report.permanent
    assert len(report.attempts) == 4
    assert [a.number for a in report.attempts] == [1, 2, 3, 4]
    assert all(a.status is None and "association" in a.comment for a in report.attempts)
    assert waits == [0.5, 1.0, 2.0]  # growing pause between attempts, none after the last
    assert report.failed and report.failed[0].path == str(files["rtstruct"])
    with pytest.raises(SendError, match="failed after 4 attempt"):
        report.raise_for_status()
    assert report.to_json_dict()["attempts"][0]["time"]


def test_a_permanent_rejection_stops_retrying(tmp_path, files):
    """Orthanc checking its called AE title rejects us permanently: one attempt, the remote's
    reason kept, no pointless retries."""
    with OrthancProcess(tmp_path / "strict", aet="PACS", DicomCheckCalledAet=True) as strict:
        waits: list[float] = []
        wrong = Peer("NOTPACS", "127.0.0.1", strict.dicom_port)
        report = send_files([files["rtstruct"]], wrong, retries=3, backoff=0.1,
                            sleep=waits.append)
        assert strict.instances() == []
    assert not report.ok and report.permanent
    assert len(report.attempts) == 1 and waits == []
    assert "Called AE title not recognised" in report.attempts[0].comment
    assert "refused permanently" in report.reason


class StatusSCP:
    """A storage SCP that answers C-STORE with the given statuses in turn (then success), to
    show how each DICOM status is treated."""

    def __init__(self, statuses: list[int], comment: str = ""):
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.statuses = list(statuses)
        self.comment = comment
        self.received = 0
        ae = AE(ae_title="STATUSSCP")
        ae.supported_contexts = AllStoragePresentationContexts
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.handle)])

    def handle(self, event):
        from pydicom.dataset import Dataset

        self.received += 1
        status = self.statuses.pop(0) if self.statuses else 0x0000
        rsp = Dataset()
        rsp.Status = status
        if status and self.comment:
            rsp.ErrorComment = self.comment
        return rsp

    @property
    def peer(self) -> Peer:
        return Peer("STATUSSCP", "127.0.0.1", self.port)

    def stop(self) -> None:
        self.server.shutdown()


def test_out_of_resources_is_retried_and_recorded(files):
    scp = StatusSCP([0xA700, 0xA702])
    try:
        report = send_files([files["rtstruct"]], scp.peer, retries=3, backoff=0.1,
                            sleep=lambda s: None)
    finally:
        scp.stop()
    assert report.ok
    assert [a.status for a in report.attempts] == [0xA700, 0xA702, 0x0000]
    assert scp.received == 3


def test_a_permanent_status_keeps_the_remote_status_and_comment(files):
    scp = StatusSCP([0xA900], comment="Data set does not match SOP class")
    try:
        report = send_files([files["rtstruct"]], scp.peer, retries=3, backoff=0.1,
                            sleep=lambda s: None)
    finally:
        scp.stop()
    assert not report.ok and report.permanent
    assert len(report.attempts) == 1 and report.status == 0xA900
    assert report.failed[0].status == 0xA900
    assert "does not match" in report.attempts[0].comment
    assert "0xA900" in report.reason
    with pytest.raises(SendError, match="0xA900"):
        report.raise_for_status()
