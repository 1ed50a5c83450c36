"""Reading robot state from pixels: the key-point / joint translator."""
