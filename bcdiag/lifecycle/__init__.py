"""The model lifecycle: training runs, retraining cycles, the gate, the scheduler, studies."""
