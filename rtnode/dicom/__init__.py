"""The network layer: the DICOM listener (SCP) and the outgoing requests (SCU)."""
