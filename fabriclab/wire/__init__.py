"""The wire format, engine-neutral: typed frames (:mod:`.frames`), their byte codecs for
real packets (:mod:`.roce`), and scapy layers that dissect them in captures
(:mod:`.layers`).  The emulator, the controllers and the metrics import it; it imports no
engine."""
