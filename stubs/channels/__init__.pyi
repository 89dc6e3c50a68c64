# Stubs for the parts of channels 4 this project calls: channels ships no types.
