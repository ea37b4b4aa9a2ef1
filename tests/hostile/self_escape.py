# expect: self.trainer is not available
# ruff: noqa
def loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    self.trainer.save_model('pwned')
    return -F.logsigmoid(self.beta * rho)
