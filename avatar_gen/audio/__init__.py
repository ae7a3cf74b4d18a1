"""Speech audio: text-to-speech back-ends (:mod:`avatar_gen.audio.tts`) and speech features for the model.

Import the submodules directly (``from avatar_gen.audio.tts import synthesize``); this package imports
nothing heavy so that importing one back-end never loads another.
"""
