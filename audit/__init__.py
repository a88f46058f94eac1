"""Audit trail: encrypted, tamper-evident, retention-governed records (issue 4).

This package never imports `sidecar` or `grpc`: compliance tooling can use it alone.
Nothing is implemented here yet; the sidecar does not write audit records so far, and
`InspectResponse.audit_id` is empty until it does.
"""
