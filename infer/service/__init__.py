"""What the command-line tools and training call: predict and evaluate (:mod:`.run`), and the model
summary of ``idl-predict --info`` (:mod:`.describe`)."""
