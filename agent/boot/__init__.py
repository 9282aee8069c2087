"""The boot check: boot a repaired guest once under QEMU, through a throwaway overlay."""
