"""End-to-end paths built from the layers below (adaptation, estimation, degradations, ZSSR): the photo path
(:mod:`.photo`) and folder evaluation (:mod:`.evaluate`)."""
