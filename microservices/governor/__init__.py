"""governor (P3.2): trading state, fund caps, cooldown and rate limits → quantum:permit:p32:<plan_id>."""
