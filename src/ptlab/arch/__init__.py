"""Architecture code: what differs between x86-64, arm64, powerpc and s390."""
