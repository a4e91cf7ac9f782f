"""Reports generated from incident timelines: failure, post-incident, monthly."""
