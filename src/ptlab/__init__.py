"""ptlab: the Linux page-table lifecycle, executable and checked."""
