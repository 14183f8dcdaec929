"""Protocol files shipped with facebench (one TOML file each); read by facebench.protocol."""
