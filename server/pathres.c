/* pathres — being written */
typedef int parley_pathres_placeholder;
