/* codec — being written */
typedef int parley_codec_placeholder;
