"""What the files say: settings, the tgt config parser, the instance rules, trust, inventory.
Imports only model; reads the files it is handed, runs nothing."""
