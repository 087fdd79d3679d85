"""Check an in-toto Statement of SLSA provenance v1 with the in-toto attestation library's own
protobuf definitions (in-toto-attestation on PyPI, pulled in by model-signing), independently of
crambench.

usage: slsa_check.py STATEMENT_OR_DSSE_ENVELOPE
Parses the statement strictly into in_toto_attestation.v1.Statement and its predicate strictly
into in_toto_attestation.predicates.provenance.v1.Provenance (unknown fields, wrong types and
timestamps that are not RFC 3339 are errors), then checks the fields SLSA v1 requires
(https://slsa.dev/spec/v1.0/provenance): buildDefinition.buildType, .externalParameters,
runDetails.builder.id, and every ResourceDescriptor. Prints "ok" and exits 0, else prints the
problem and exits 1.
"""
import base64
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement, statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor


def main() -> int:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    if "payloadType" in doc:
        doc = json.loads(base64.b64decode(doc["payload"]))
    try:
        st = statement.Statement.copy_from_pb(
            json_format.ParseDict(doc, statement_pb2.Statement())
        )
        st.validate()
        if st.pb.predicate_type != "https://slsa.dev/provenance/v1":
            raise ValueError(f"predicateType {st.pb.predicate_type}")
        prov = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
        bd, rd = prov.build_definition, prov.run_details
        if not bd.build_type:
            raise ValueError("buildDefinition.buildType is required")
        if not bd.HasField("external_parameters"):
            raise ValueError("buildDefinition.externalParameters is required")
        if not rd.builder.id:
            raise ValueError("runDetails.builder.id is required")
        for dep in list(bd.resolved_dependencies) + list(rd.byproducts):
            ResourceDescriptor.copy_from_pb(dep).validate()
        md = rd.metadata
        if md.HasField("started_on") and md.HasField("finished_on"):
            if md.finished_on.ToNanoseconds() < md.started_on.ToNanoseconds():
                raise ValueError("finishedOn is before startedOn")
    except Exception as e:  # ParseError, ValueError
        print(f"{type(e).__name__}: {e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
