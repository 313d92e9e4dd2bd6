"""The phone line: SIP (RFC 3261) over UDP with G.711 and RFC 4733 DTMF, translated into the
same calls as every other entrance (`server/admission.py`, `calls/assembly.py`)."""
