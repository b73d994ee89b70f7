"""Reading a stored sweep: phases and critical learning rates (:mod:`.phases`), the
boundary search that refines them (:mod:`.boundary`) and the text reports
(:mod:`.report`)."""
