"""Pure planning: resolve what the spec leaves open (batch arithmetic, DeepSpeed preset) before launch."""
