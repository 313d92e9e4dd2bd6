"""Static files of the browser demo (served by signalling at /)."""
