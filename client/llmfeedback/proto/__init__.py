"""Generated from protos/ by scripts/generate_protos.sh; do not edit."""
