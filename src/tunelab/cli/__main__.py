"""`python -m tunelab.cli ...` (torchrun, accelerate launch and the jobs worker start it so)."""
from tunelab.cli import main

main()
