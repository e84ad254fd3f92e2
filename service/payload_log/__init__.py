"""Payload logs: a sampled, redacted record of each request and its answer, as Parquet parts.

``answered`` (which version answered, and the shadow's: the hook the data plane and rollouts
fill), ``records`` (a record's columns and redaction), ``writer`` (the bounded queue and the
background writer over the batch job's part store), ``middleware`` (where a request is
sampled and captured), ``replay`` (reading a log back as rows for a batch job, with ``v2``
reading logged V2 tensors and ``uploads`` logged multipart files).
"""
