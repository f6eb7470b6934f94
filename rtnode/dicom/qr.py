"""Query/Retrieve SCU: C-FIND to see what a PACS holds, C-MOVE to have it send it to us.

Each call opens one association, does one request and releases it: a retrieval running for days
must survive a PACS restart between two series, and holds no association while it waits.
Network trouble becomes a RemoteError whose message says what to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from rtnode.config import RemoteConfig
from rtnode.dicom.tls import tls_args


class RemoteError(ConnectionError):
    """The PACS could not be reached, refused us, or failed the request."""


@dataclass(frozen=True)
class MoveResult:
    status: int | None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 and self.failed == 0


class QueryRetrieveSCU:
    """C-FIND and C-MOVE against one configured remote."""

    def __init__(self, name: str, remote: RemoteConfig, calling_ae: str, timeout: float = 60.0):
        self.name, self.remote, self.calling_ae, self.timeout = name, remote, calling_ae, timeout
        patient = remote.query_model == "patient"
        self.find_model = (PatientRootQueryRetrieveInformationModelFind if patient
                           else StudyRootQueryRetrieveInformationModelFind)
        self.move_model = (PatientRootQueryRetrieveInformationModelMove if patient
                           else StudyRootQueryRetrieveInformationModelMove)

    def __str__(self) -> str:
        r = self.remote
        return f"{self.name} ({r.ae_title}@{r.host}:{r.port})"

    def _associate(self, model):
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(model)
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        ae.dimse_timeout = 3600  # a C-MOVE's final response comes after the whole series
        assoc = ae.associate(self.remote.host, self.remote.port, ae_title=self.remote.ae_title,
                             tls_args=tls_args(self.remote.host))
        if assoc.is_rejected:
            raise RemoteError(f"association rejected by {self}: check that it knows our AE "
                              f"title {self.calling_ae!r}")
        if not assoc.is_established:
            raise RemoteError(f"cannot reach {self}: is it running, and are host and port "
                              "right?")
        return assoc

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        assoc = self._associate(self.find_model)
        try:
            for status, identifier in assoc.send_c_find(query, self.find_model):
                if status is None:
                    raise RemoteError(f"{self} stopped answering the C-FIND")
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    yield identifier
                elif code != 0x0000:
                    raise RemoteError(f"{self} failed the C-FIND with status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()

    def find_patients(self) -> list[str]:
        q = Dataset()
        q.QueryRetrieveLevel = "PATIENT"
        q.PatientID = ""
        return sorted({str(r.PatientID) for r in self._find(q) if r.get("PatientID")})

    def find_studies(self, patient_id: str | None = None, study_date: str | None = None,
                     study_uid: str | None = None) -> list[dict[str, Any]]:
        if self.remote.query_model == "patient" and not patient_id:
            return [s for p in self.find_patients()
                    for s in self.find_studies(p, study_date, study_uid)]
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = patient_id or ""
        q.StudyInstanceUID = study_uid or ""
        q.StudyDate = study_date or ""
        q.StudyDescription = ""
        q.ModalitiesInStudy = ""
        return [{"patient_id": str(r.get("PatientID", "")),
                 "study_uid": str(r.StudyInstanceUID), "study_date": str(r.get("StudyDate", "")),
                 "study_description": str(r.get("StudyDescription", ""))}
                for r in self._find(q) if r.get("StudyInstanceUID")]

    def find_series(self, patient_id: str, study_uid: str) -> list[dict[str, Any]]:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.PatientID = patient_id
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.Modality = ""
        q.SeriesDescription = ""
        q.NumberOfSeriesRelatedInstances = ""
        out = []
        for r in self._find(q):
            n = r.get("NumberOfSeriesRelatedInstances")
            out.append({"series_uid": str(r.SeriesInstanceUID),
                        "modality": str(r.get("Modality", "")),
                        "series_description": str(r.get("SeriesDescription", "")),
                        "instances": int(n) if n not in (None, "") else None})
        return out

    def find_instances(self, patient_id: str, study_uid: str, series_uid: str) -> list[str]:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.PatientID = patient_id
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = ""
        return [str(r.SOPInstanceUID) for r in self._find(q) if r.get("SOPInstanceUID")]

    def move(self, destination_ae: str, patient_id: str, study_uid: str, series_uid: str,
             sop_instance_uids: list[str] | None = None) -> MoveResult:
        """C-MOVE one series (or the listed instances of it) to destination_ae."""
        q = Dataset()
        q.PatientID = patient_id
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        if sop_instance_uids:
            q.QueryRetrieveLevel = "IMAGE"
            q.SOPInstanceUID = sop_instance_uids
        else:
            q.QueryRetrieveLevel = "SERIES"
        assoc = self._associate(self.move_model)
        last: tuple[int | None, Dataset | None] = (None, None)
        try:
            for status, _ in assoc.send_c_move(q, destination_ae, self.move_model):
                if status is None:
                    return MoveResult(None, error=f"{self} stopped answering the C-MOVE")
                last = (int(status.Status), status)
        finally:
            if assoc.is_established:
                assoc.release()
        code, ds = last
        if ds is None:
            return MoveResult(None, error="no C-MOVE response")

        def count(keyword: str) -> int:
            v = ds.get(keyword)
            return int(v) if v not in (None, "") else 0

        error = "" if code in (0x0000, 0xB000) else (
            f"status 0x{code:04X}" + (f": {ds.ErrorComment}" if "ErrorComment" in ds else "")
            + (" (move destination unknown: add our AE title to the PACS)"
               if code == 0xA801 else ""))
        return MoveResult(code, count("NumberOfCompletedSuboperations"),
                          count("NumberOfFailedSuboperations"),
                          count("NumberOfWarningSuboperations"), error)
