"""The large-batch studies: design, plan, driver (run), report and plots."""
